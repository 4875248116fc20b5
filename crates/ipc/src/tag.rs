//! Typed messages: a small tag, then the value's postcard encoding.
//!
//! `send(&value)` writes one frame whose payload is
//!
//! | bytes | content |
//! |---|---|
//! | 4 | [`MAGIC`] (`F0 6D 70 54`, `"\xF0mpT"`) |
//! | 8 | the value's shape fingerprint ([`fingerprint_of`]), big-endian |
//! | 1 | `n`, the length of the sender's type name |
//! | n | the sender's `std::any::type_name::<T>()`, UTF-8, cut to 255 bytes on a character boundary: display text for the error, and compared whole with the receiver's (never parsed) |
//! | … | the postcard body |
//!
//! The fingerprint hashes the serde data-model calls that encode the value
//! (see `shape.rs`: primitive kinds, struct, enum, variant and field
//! names, sequence and tuple markers) — not the type's name, whose text
//! Rust does not promise. `recv::<B>()` decodes the body through a wrapper
//! that hashes the calls `B`'s `Deserialize` makes in the same canonical
//! form, and compares: a message sent as `A` is [`Error::TypeMismatch`]
//! naming both types, never garbage. A body that does not decode as `B`
//! at all is the same mismatch (between honest peers a typed body is never
//! corrupt, so a failed decode means another type was sent). serde's model
//! itself makes borrowed and owned forms one shape: `str` ≡ `String`,
//! `[T]` ≡ `Vec<T>`, `&T` ≡ `Box<T>` ≡ `Arc<T>` ≡ `T`; an array `[T; N]`
//! (a tuple to serde) stays distinct from `Vec<T>` (a sequence), as
//! postcard's bytes for them differ.
//!
//! The raw payload of a typed message — what `recv_bytes` returns — is the
//! whole payload, tag included, so `recv_bytes` then `send_bytes` forwards
//! a typed message unchanged; [`body`] strips the tag.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::decode::{self, Limit};
use crate::encode::{self, Record};
use crate::{Error, Result};

pub(crate) mod bulk;
pub(crate) mod shape;

/// The first four bytes of every typed payload.
pub const MAGIC: [u8; 4] = *b"\xF0mpT";

/// What [`Error::TypeMismatch`]'s `found` says for an untagged payload.
const UNTAGGED: &str = "bytes (send_bytes)";

/// Magic, fingerprint and name length.
const FIXED_TAG_LEN: usize = 4 + 8 + 1;

/// Encodes `value` as a typed payload (tag + postcard body) appended to
/// `out`.
///
/// A serialisation failure is [`Error::Encode`] and leaves `out` as it was.
///
/// ```
/// let mut payload = Vec::new();
/// mproc_ipc::__private::tag::encode("hi", &mut payload).unwrap();
/// let s: String = mproc_ipc::__private::tag::decode(&payload).unwrap();
/// assert_eq!(s, "hi");
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    if let Some(bytes) = bulk::as_bytes(value) {
        // postcard's body for a byte sequence, without its per-byte calls.
        bulk_tag::<T>(bytes, out);
        out.extend_from_slice(bytes);
        return Ok(());
    }
    let start = out.len();
    push_tag::<T>(0, out);
    let record = Record::new(shape::Fingerprint::new());
    let mut postcard = postcard::Serializer {
        output: postcard::ser_flavors::io::WriteFlavor::new(&mut *out),
    };
    match value.serialize(encode::Serializer::new(&mut postcard, &record)) {
        Ok(()) => {
            out[start + 4..start + 12].copy_from_slice(&record.shape().get().to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(Error::Encode(record.fail(e)))
        }
    }
}

/// Appends the tag `value` would be sent with to `out`, without its body
/// (for callers that write the body from elsewhere, and for tests that
/// forge payloads).
///
/// A value that cannot be serialised is [`Error::Encode`] and leaves `out`
/// as it was.
pub fn encode_tag<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let fingerprint = fingerprint_of(value)?;
    push_tag::<T>(fingerprint, out);
    Ok(())
}

/// Appends the tag of the byte sequence `bytes` (from
/// [`bulk::as_bytes`] of a `T`) and its body's varint length to `out`.
pub(crate) fn bulk_tag<T: ?Sized>(bytes: &[u8], out: &mut Vec<u8>) {
    push_tag::<T>(bulk::fingerprint_of_bytes::<T>(bytes), out);
    bulk::push_varint(bytes.len(), out);
}

/// Appends magic, `fingerprint` and `T`'s name to `out`.
fn push_tag<T: ?Sized>(fingerprint: u64, out: &mut Vec<u8>) {
    let name = sent_name::<T>();
    out.reserve(FIXED_TAG_LEN + name.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&fingerprint.to_be_bytes());
    // `truncate_utf8` keeps at most 255 bytes.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// The name a message of `T` carries: `type_name::<T>()` cut to 255 bytes.
fn sent_name<T: ?Sized>() -> &'static str {
    truncate_utf8(std::any::type_name::<T>(), 255)
}

/// The 8-byte shape fingerprint a typed message of `value` carries: a hash
/// of the serde data-model calls that serialise it (module docs). Equal
/// for borrowed and owned forms, different for different primitive kinds,
/// struct, enum, variant or field names. A value that cannot be
/// serialised is [`Error::Encode`].
///
/// ```
/// use mproc_ipc::__private::tag::fingerprint_of;
/// assert_eq!(fingerprint_of("a").unwrap(), fingerprint_of(&String::from("b")).unwrap());
/// assert_eq!(fingerprint_of(&[&"a"][..]).unwrap(), fingerprint_of(&vec![String::new()]).unwrap());
/// assert_ne!(fingerprint_of(&1u32).unwrap(), fingerprint_of(&1i32).unwrap());
/// ```
pub fn fingerprint_of<T: Serialize + ?Sized>(value: &T) -> Result<u64> {
    match bulk::as_bytes(value) {
        Some(bytes) => Ok(bulk::fingerprint_of_bytes::<T>(bytes)),
        None => shape::fingerprint(value).map_err(Error::Encode),
    }
}

/// Decodes a typed payload as a `T`.
///
/// * no tag (a `send_bytes` payload, or a malformed tag):
///   [`Error::TypeMismatch`] with `found: "bytes (send_bytes)"`;
/// * a body of another shape than `T`'s, or one that does not decode as
///   a `T`: [`Error::TypeMismatch`] naming `type_name::<T>()` and the
///   sender's type name;
/// * a `T` followed by bytes left over: [`Error::Decode`];
/// * a body nesting more than 128 levels of containers (options,
///   sequences, maps, structs, enums, …): [`Error::Decode`] saying so,
///   rather than recursing on: hostile bytes for a recursive type such as
///   `enum Tree { Leaf, Node(Box<Tree>) }` cannot overflow the stack.
///
/// ```
/// let mut payload = Vec::new();
/// mproc_ipc::__private::tag::encode(&7u32, &mut payload).unwrap();
/// let err = mproc_ipc::__private::tag::decode::<String>(&payload).unwrap_err();
/// assert_eq!(err.to_string(), "type mismatch: expected alloc::string::String, received u32");
/// ```
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let Some(tag) = parse(payload) else {
        return Err(mismatch::<T>(UNTAGGED.as_bytes()));
    };
    if let Some(shape) = bulk::shape_of::<T>() {
        match bulk::read_varint(tag.body) {
            Some((len, n))
                if tag.body.len() - n == len
                    && tag.fingerprint == bulk::fingerprint_of_shape(shape, len == 0) =>
            {
                return bulk::into_value(shape, tag.body[n..].to_vec()).map_err(Error::decode);
            }
            // Anything else is for the general decoder to judge.
            _ => {}
        }
    }
    decode_body(&tag, decode::DEFAULT_LIMIT)
}

/// Where the body of a byte-sequence `T` starts in a typed payload of
/// `len` bytes whose first bytes are `head` (at least
/// `min(len, MAX_BULK_PREFIX)` of them): `Some(offset)` when `head` holds
/// the tag of such a sequence and a canonical varint announcing exactly
/// `len - offset` bytes. `None` sends the payload to [`decode()`].
pub(crate) fn bulk_body_offset<T>(head: &[u8], len: usize) -> Option<usize> {
    bulk_body_offset_of(bulk::shape_of::<T>()?, head, len)
}

/// [`bulk_body_offset`] for a byte sequence of shape `shape`.
pub(crate) fn bulk_body_offset_of(shape: bulk::Shape, head: &[u8], len: usize) -> Option<usize> {
    let tag = parse(head)?;
    let start = head.len() - tag.body.len();
    let (body_len, n) = bulk::read_varint(tag.body)?;
    let exact = len.checked_sub(start + n)? == body_len;
    (exact && tag.fingerprint == bulk::fingerprint_of_shape(shape, body_len == 0))
        .then_some(start + n)
}

/// The `T` whose body `body` is, a byte sequence of shape `shape` whose
/// tag [`bulk_body_offset_of`] accepted; `Error::Decode` if `T` is not of
/// that shape (or a `String` body is not UTF-8).
pub(crate) fn bulk_value<T>(shape: bulk::Shape, body: Vec<u8>) -> Result<T> {
    if bulk::shape_of::<T>() != Some(shape) {
        return Err(Error::decode_msg("a byte sequence read for another type"));
    }
    bulk::into_value(shape, body).map_err(Error::decode)
}

/// The longest tag plus varint: what [`bulk_body_offset`] needs to see.
pub(crate) const MAX_BULK_PREFIX: usize = FIXED_TAG_LEN + 255 + bulk::MAX_VARINT;

/// Decodes `tag`'s body as a `T` nesting at most `max_depth` levels, and
/// checks the shape of what was decoded against the tag's fingerprint.
fn decode_body<T: DeserializeOwned>(tag: &Tag<'_>, max_depth: usize) -> Result<T> {
    let limit = Limit::with(max_depth, shape::Fingerprint::new());
    let mut de = postcard::Deserializer::from_bytes(tag.body);
    let value = T::deserialize(decode::Deserializer::new(&mut de, &limit));
    let value = value.map_err(|e| limit.refusal_of(e));
    // The sender named the very type asked for (the same program, or one
    // built from the same source): its body is a `T`'s even where `T`'s
    // `Serialize` and `Deserialize` make different calls (a hand-written
    // impl, `#[serde(try_from = ..)]`), so the shape hashes may differ.
    // Equality of two names of one build, not their format, is all this
    // relies on.
    let same_type = tag.name == sent_name::<T>().as_bytes();
    match value.and_then(|v| de.finalize().map(|rest| (v, rest)).map_err(Err)) {
        Err(_) if limit.exceeded() => {
            Err(Error::decode_msg(decode::TooDeep(limit.max()).to_string()))
        }
        // A `Deserialize` impl refused a value its own type's shape read
        // (`D::Error::custom`): its text reaches the user, as CPython's
        // unpickling error does.
        Err(Ok((text, false))) => Err(Error::decode_msg(text)),
        // serde's own shape errors and postcard's: a body of the named
        // type that does not decode is damaged; of another type, it is
        // that type's.
        Err(Ok((text, true))) if same_type => Err(Error::decode_msg(text)),
        Err(Err(e)) if same_type => Err(Error::decode(e)),
        Err(_) => Err(mismatch::<T>(tag.name)),
        Ok(_) if !same_type && limit.shape().get() != tag.fingerprint => {
            Err(mismatch::<T>(tag.name))
        }
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::decode_msg(format!(
            "{} trailing bytes after a {}",
            rest.len(),
            std::any::type_name::<T>()
        ))),
    }
}

/// A `T` was expected, the sender (named `found`) sent something else.
fn mismatch<T: ?Sized>(found: &[u8]) -> Error {
    Error::TypeMismatch {
        expected: std::any::type_name::<T>().to_owned(),
        found: String::from_utf8_lossy(found).into_owned(),
    }
}

/// The postcard body of a typed payload, or the whole payload when it is
/// untagged (a `send_bytes` message).
pub fn body(payload: &[u8]) -> &[u8] {
    parse(payload).map_or(payload, |t| t.body)
}

/// Whether `payload` carries a well-formed typed-message tag.
pub fn is_typed(payload: &[u8]) -> bool {
    parse(payload).is_some()
}

/// The sender's type name recorded in a typed payload's tag, if any.
pub fn sender_type_name(payload: &[u8]) -> Option<String> {
    parse(payload).map(|t| String::from_utf8_lossy(t.name).into_owned())
}

struct Tag<'a> {
    fingerprint: u64,
    name: &'a [u8],
    body: &'a [u8],
}

fn parse(payload: &[u8]) -> Option<Tag<'_>> {
    let (magic, rest) = payload.split_first_chunk::<4>()?;
    if *magic != MAGIC {
        return None;
    }
    let (fingerprint, rest) = rest.split_first_chunk::<8>()?;
    let (&name_len, rest) = rest.split_first()?;
    let name_len = usize::from(name_len);
    if rest.len() < name_len {
        return None;
    }
    let (name, body) = rest.split_at(name_len);
    Some(Tag {
        fingerprint: u64::from_be_bytes(*fingerprint),
        name,
        body,
    })
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::borrow::Cow;
    use std::collections::HashMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct A {
        x: u32,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct B {
        x: u32,
    }

    fn typed<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out).unwrap();
        out
    }

    #[test]
    fn tag_layout() {
        let p = typed(&5u8);
        assert_eq!(&p[..4], b"\xF0mpT");
        assert_eq!(&p[4..12], &fingerprint_of(&5u8).unwrap().to_be_bytes());
        assert_eq!(p[12], 2);
        assert_eq!(&p[13..15], b"u8");
        assert_eq!(&p[15..], &[5]);
        assert_eq!(body(&p), &[5]);
        assert!(is_typed(&p));
        assert_eq!(sender_type_name(&p).as_deref(), Some("u8"));
        assert_eq!(body(b"raw"), b"raw");
        assert!(!is_typed(b"raw"));
    }

    #[test]
    fn u32_vs_string_names_both() {
        let err = decode::<String>(&typed(&7u32)).unwrap_err();
        match &err {
            Error::TypeMismatch { expected, found } => {
                assert_eq!(expected, "alloc::string::String");
                assert_eq!(found, "u32");
            }
            other => panic!("{other:?}"),
        }
        let err = decode::<u32>(&typed("seven")).unwrap_err();
        assert!(
            matches!(&err, Error::TypeMismatch { expected, found } if expected == "u32" && found == "str"),
            "{err:?}"
        );
    }

    #[test]
    fn borrowed_forms_decode_as_owned() {
        assert_eq!(decode::<String>(&typed("x")).unwrap(), "x");
        assert_eq!(decode::<String>(&typed(&"x")).unwrap(), "x");
        assert_eq!(
            decode::<String>(&typed(&&mut String::from("x"))).unwrap(),
            "x"
        );
        assert_eq!(decode::<Vec<u8>>(&typed(&[1u8, 2][..])).unwrap(), [1, 2]);
        assert_eq!(decode::<Vec<u8>>(&typed(&&[1u8, 2][..])).unwrap(), [1, 2]);
        assert_eq!(
            decode::<Vec<String>>(&typed(&["a", "b"][..])).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            decode::<Option<String>>(&typed(&Some("a")))
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(decode::<u64>(&typed(&Box::new(9u64))).unwrap(), 9);
        assert_eq!(
            decode::<String>(&typed(&Box::<str>::from("b"))).unwrap(),
            "b"
        );
        assert_eq!(
            decode::<Vec<u8>>(&typed(&Cow::<[u8]>::Borrowed(&[3]))).unwrap(),
            [3]
        );
        assert_eq!(
            decode::<(String, Vec<u8>)>(&typed(&("a", &[1u8][..]))).unwrap(),
            ("a".to_owned(), vec![1])
        );
        let mut m = HashMap::new();
        m.insert("k", 1u8);
        let back = decode::<HashMap<String, u8>>(&typed(&m)).unwrap();
        assert_eq!(back.get("k"), Some(&1));
        let v = A { x: 1 };
        assert_eq!(decode::<A>(&typed(&&v)).unwrap(), v);
    }

    #[test]
    fn arrays_are_not_vecs() {
        // postcard writes no length for arrays: decoding one as a Vec would
        // be garbage, so they are distinct types.
        assert!(matches!(
            decode::<Vec<u8>>(&typed(&[1u8, 2, 3])),
            Err(Error::TypeMismatch { .. })
        ));
        assert_eq!(decode::<[u8; 3]>(&typed(&[1u8, 2, 3])).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn struct_a_vs_struct_b() {
        let err = decode::<B>(&typed(&A { x: 1 })).unwrap_err();
        match err {
            Error::TypeMismatch { expected, found } => {
                assert!(expected.ends_with("::B"), "{expected}");
                assert!(found.ends_with("::A"), "{found}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn untagged_bytes_mismatch() {
        for raw in [&b""[..], b"hello", b"\xF0mpT", b"\xF0mpT12345678\x05ab"] {
            let err = decode::<String>(raw).unwrap_err();
            assert!(
                matches!(&err, Error::TypeMismatch { found, .. } if found == "bytes (send_bytes)"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_body_that_does_not_decode_is_a_mismatch_trailing_bytes_a_decode_error() {
        let mut p = Vec::new();
        encode_tag("", &mut p).unwrap();
        p.extend_from_slice(&[5, b'a']); // says 5 bytes, has 1
        assert!(matches!(
            decode::<String>(&p),
            Err(Error::TypeMismatch { found, .. }) if found == "str"
        ));
        // Sent as the type asked for: a damaged body, not a mismatch.
        let mut p = Vec::new();
        encode_tag(&String::new(), &mut p).unwrap();
        p.extend_from_slice(&[5, b'a']);
        assert!(matches!(decode::<String>(&p), Err(Error::Decode(_))));
        let mut p = typed(&1u8);
        p.push(0);
        assert!(matches!(decode::<u8>(&p), Err(Error::Decode(_))));
    }

    #[test]
    fn encode_error_leaves_buffer() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let mut out = b"keep".to_vec();
        assert!(matches!(encode(&Bad, &mut out), Err(Error::Encode(_))));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let s = "é".repeat(200); // 400 bytes
        assert_eq!(truncate_utf8(&s, 255).len(), 254);
        assert_eq!(truncate_utf8("abc", 255), "abc");
    }

    /// A type that nests without bound.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    /// `n` nodes around a leaf: `n + 1` nested enums.
    fn tree(n: usize) -> Tree {
        (0..n).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
    }

    /// Two levels per node: the struct and its option.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct List {
        next: Option<Box<List>>,
    }

    /// One level per node (the newtype) plus one per sequence.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Nest(Vec<Nest>);

    fn on_thread<R: Send + 'static>(stack: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    const TOO_DEEP: &str = "cannot decode message: the message nests deeper than 128 levels";

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        // A million levels of nesting tags: without the limit this needs
        // hundreds of MiB of stack. On a 256 KiB stack it must simply fail.
        const LEVELS: usize = 1_000_000;
        on_thread(512 * 1024, || {
            // Tree: variant index 1 (Node) per level, then 0 (Leaf).
            let mut p = Vec::new();
            encode_tag(&Tree::Leaf, &mut p).unwrap();
            p.resize(p.len() + LEVELS, 1);
            p.push(0);
            assert_eq!(decode::<Tree>(&p).unwrap_err().to_string(), TOO_DEEP);
            // List: `Some` per level, then `None`.
            let mut p = Vec::new();
            encode_tag(&List { next: None }, &mut p).unwrap();
            p.resize(p.len() + LEVELS, 1);
            p.push(0);
            assert_eq!(decode::<List>(&p).unwrap_err().to_string(), TOO_DEEP);
            // Nest: a one-element sequence per level, then an empty one.
            let mut p = Vec::new();
            encode_tag(&Nest(vec![]), &mut p).unwrap();
            p.resize(p.len() + LEVELS, 1);
            p.push(0);
            assert_eq!(decode::<Nest>(&p).unwrap_err().to_string(), TOO_DEEP);
        });
    }

    #[test]
    fn nesting_up_to_the_limit_round_trips_on_a_2_mib_stack() {
        // Rust's default spawned-thread stack, in whatever build runs this.
        on_thread(2 * 1024 * 1024, || {
            let at_limit = tree(decode::DEFAULT_LIMIT - 1);
            assert_eq!(decode::<Tree>(&typed(&at_limit)).unwrap(), at_limit);
            let over = tree(decode::DEFAULT_LIMIT);
            assert_eq!(
                decode::<Tree>(&typed(&over)).unwrap_err().to_string(),
                TOO_DEEP
            );

            let list = |n: usize| {
                (0..n).fold(List { next: None }, |l, _| List {
                    next: Some(Box::new(l)),
                })
            };
            let at_limit = list(decode::DEFAULT_LIMIT / 2 - 1);
            assert_eq!(decode::<List>(&typed(&at_limit)).unwrap(), at_limit);
            let over = list(decode::DEFAULT_LIMIT / 2);
            assert_eq!(
                decode::<List>(&typed(&over)).unwrap_err().to_string(),
                TOO_DEEP
            );
        });
    }

    #[test]
    fn every_container_is_one_level() {
        fn at<T>(max: usize, v: &T) -> Result<T>
        where
            T: Serialize + DeserializeOwned,
        {
            let mut p = Vec::new();
            encode_tag(v, &mut p).unwrap();
            p.extend_from_slice(&postcard::to_stdvec(v).unwrap());
            decode_body(&parse(&p).unwrap(), max)
        }
        fn fits<T>(max: usize, v: T)
        where
            T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            assert_eq!(at(max, &v).unwrap(), v);
            if max > 0 {
                let err = at(max - 1, &v).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!(
                        "cannot decode message: the message nests deeper than {} levels",
                        max - 1
                    ),
                    "{v:?}"
                );
            }
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Unit;
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Newtype(u8);
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Pair(u8, String);
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum E {
            Unit,
            Newtype(u8),
            Tuple(u8, u8),
            Struct { a: u8 },
        }

        // Scalars are no level.
        fits(0, 7u32);
        fits(0, String::from("s"));
        fits(0, 'c');
        fits(0, ());
        fits(0, Unit);
        fits(0, 1.5f64);
        fits(0, u128::MAX);
        // One level each.
        fits(1, Some(1u8));
        fits(1, None::<u8>);
        fits(1, vec![1u8]);
        fits(1, Vec::<u8>::new());
        fits(1, (1u8, 2u8));
        fits(1, [1u8; 3]);
        fits(1, Newtype(1));
        fits(1, Pair(1, "x".into()));
        fits(1, A { x: 1 });
        fits(1, HashMap::from([(1u8, 2u8)]));
        fits(1, E::Unit);
        fits(1, E::Newtype(1));
        // An enum and its tuple or struct variant's fields.
        fits(2, E::Tuple(1, 2));
        fits(2, E::Struct { a: 1 });
        // Nesting adds up.
        fits(3, Some(Some(Some(1u8))));
        fits(3, vec![vec![vec![1u8]]]);
        fits(3, HashMap::from([(1u8, vec![Some(1u8)])]));
        fits(4, Some(vec![E::Tuple(1, 2)]));
        fits(4, tree(3));
        // A level ends when it closes: siblings do not add up.
        fits(2, vec![vec![1u8], vec![2], vec![3]]);
        fits(2, (Some(1u8), Some(2u8), vec![3u8]));
    }

    // The type-check matrix (API.md "Typed messages are checked"; CPython
    // has no counterpart: pickle carries the class, `test_connection`
    // round-trips objects): equal shapes are accepted and read exactly,
    // any other shape is a TypeMismatch, never garbage.

    /// The receiver's verdict on `value` sent as its own type.
    fn as_<R: DeserializeOwned, T: Serialize + ?Sized>(value: &T) -> Result<R> {
        decode::<R>(&typed(value))
    }

    fn is_mismatch<R: std::fmt::Debug>(r: Result<R>) -> bool {
        matches!(r, Err(Error::TypeMismatch { .. }))
    }

    mod v1 {
        use serde::{Deserialize, Serialize};
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        pub enum E {
            A,
            B(u32),
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        pub struct S {
            pub x: u32,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        pub struct P {
            pub a: u32,
            pub b: u32,
        }
    }

    mod v2 {
        use serde::{Deserialize, Serialize};
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        pub enum E {
            A,
            C(u32),
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        pub struct S {
            pub y: u32,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        pub struct P {
            pub b: u32,
            pub a: u32,
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Unit;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapper(u32);

    #[test]
    fn equal_types_round_trip() {
        assert_eq!(as_::<u32, _>(&7u32).unwrap(), 7);
        assert_eq!(as_::<A, _>(&A { x: 3 }).unwrap(), A { x: 3 });
        assert_eq!(as_::<v1::E, _>(&v1::E::B(2)).unwrap(), v1::E::B(2));
        assert_eq!(as_::<Wrapper, _>(&Wrapper(4)).unwrap(), Wrapper(4));
        assert_eq!(as_::<char, _>(&'é').unwrap(), 'é');
        assert_eq!(as_::<u128, _>(&u128::MAX).unwrap(), u128::MAX);
        assert_eq!(as_::<f64, _>(&1.5f64).unwrap(), 1.5);
        assert_eq!(
            as_::<std::time::Duration, _>(&std::time::Duration::from_millis(5)).unwrap(),
            std::time::Duration::from_millis(5)
        );
        let addr: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(as_::<std::net::SocketAddr, _>(&addr).unwrap(), addr);
        let path = std::path::PathBuf::from("/a/b");
        assert_eq!(as_::<std::path::PathBuf, _>(&path).unwrap(), path);
    }

    #[test]
    fn box_cow_and_references_are_the_value() {
        // (`Rc`/`Arc` serialise as their content too, with serde's `rc`
        // feature, which this workspace does not enable.)
        let a = || A { x: 1 };
        assert_eq!(as_::<A, _>(&Box::new(a())).unwrap(), a());
        assert_eq!(as_::<String, _>(&Cow::<str>::Borrowed("c")).unwrap(), "c");
        assert_eq!(as_::<A, _>(&&&a()).unwrap(), a());
        assert_eq!(as_::<A, _>(&&mut a()).unwrap(), a());
        assert_eq!(*as_::<Box<A>, _>(&a()).unwrap(), a());
        assert_eq!(as_::<Vec<A>, _>(&[Box::new(a())][..]).unwrap(), [a()]);
        assert_eq!(as_::<Box<str>, _>(&"b").unwrap().as_ref(), "b");
    }

    #[test]
    fn nested_generics_borrowed_and_owned() {
        let borrowed: &[Option<(&str, &[u8])>] = &[Some(("a", &[1u8, 2][..])), None];
        let owned = as_::<Vec<Option<(String, Vec<u8>)>>, _>(borrowed).unwrap();
        assert_eq!(owned, [Some(("a".to_owned(), vec![1, 2])), None]);
        let m: HashMap<&str, Vec<A>> = HashMap::from([("k", vec![A { x: 1 }])]);
        let back = as_::<HashMap<String, Vec<A>>, _>(&m).unwrap();
        assert_eq!(back["k"], [A { x: 1 }]);
        assert!(is_mismatch(as_::<HashMap<String, Vec<B>>, _>(&m)));
        assert!(is_mismatch(as_::<HashMap<String, Vec<u32>>, _>(&m)));
    }

    #[test]
    fn option_and_result() {
        assert_eq!(as_::<Option<u32>, _>(&Some(1u32)).unwrap(), Some(1));
        assert!(is_mismatch(as_::<Option<i32>, _>(&Some(1u32))));
        assert!(is_mismatch(as_::<u32, _>(&Some(1u32))));
        assert!(is_mismatch(as_::<Option<u32>, _>(&1u32)));
        let ok: std::result::Result<u32, String> = Ok(1);
        let err: std::result::Result<u32, &str> = Err("e");
        assert_eq!(
            as_::<std::result::Result<u32, String>, _>(&ok).unwrap(),
            Ok(1)
        );
        assert_eq!(
            as_::<std::result::Result<u32, String>, _>(&err).unwrap(),
            Err("e".to_owned())
        );
        assert!(is_mismatch(as_::<std::result::Result<u32, u32>, _>(&err)));
        assert!(is_mismatch(as_::<Option<u32>, _>(&ok)));
        // What the value does not exercise is not compared: a `None` is a
        // `None` of any type, read faithfully (docs/protocol.md §2).
        assert_eq!(as_::<Option<String>, _>(&None::<u32>).unwrap(), None);
    }

    #[test]
    fn enums_with_different_variants() {
        // Same enum name, variant 1 is `B` on one side and `C` on the other.
        let err = as_::<v2::E, _>(&v1::E::B(1)).unwrap_err();
        match err {
            Error::TypeMismatch { expected, found } => {
                assert!(expected.ends_with("v2::E"), "{expected}");
                assert!(found.ends_with("v1::E"), "{found}");
            }
            other => panic!("{other:?}"),
        }
        // Variant 0 is `A` on both: the value means the same on both ends.
        assert_eq!(as_::<v2::E, _>(&v1::E::A).unwrap(), v2::E::A);
        assert!(is_mismatch(as_::<std::result::Result<u32, u32>, _>(
            &v1::E::B(1)
        )));
    }

    #[test]
    fn same_struct_name_other_fields() {
        assert!(is_mismatch(as_::<v2::S, _>(&v1::S { x: 1 })));
        // Same fields in another order: the bytes would swap them.
        assert!(is_mismatch(as_::<v2::P, _>(&v1::P { a: 1, b: 2 })));
        assert_eq!(
            as_::<v1::P, _>(&v1::P { a: 1, b: 2 }).unwrap(),
            v1::P { a: 1, b: 2 }
        );
    }

    #[test]
    fn primitive_kinds_differ() {
        assert!(is_mismatch(as_::<i32, _>(&7u32)));
        assert!(is_mismatch(as_::<u64, _>(&7u32)));
        assert!(is_mismatch(as_::<u32, _>(&7u64)));
        assert!(is_mismatch(as_::<u8, _>(&true)));
        assert!(is_mismatch(as_::<u32, _>(&'a')));
        assert!(is_mismatch(as_::<f32, _>(&1.0f64)));
        assert!(is_mismatch(as_::<String, _>(&'a')));
        assert!(is_mismatch(as_::<Wrapper, _>(&7u32)));
        assert!(is_mismatch(as_::<u32, _>(&Wrapper(7))));
    }

    #[test]
    fn tuples_arrays_and_vecs() {
        // serde writes a tuple and an array alike (and so does postcard).
        assert_eq!(as_::<(u8, u8, u8), _>(&[1u8, 2, 3]).unwrap(), (1, 2, 3));
        assert_eq!(as_::<[u8; 3], _>(&(1u8, 2u8, 3u8)).unwrap(), [1, 2, 3]);
        assert!(is_mismatch(as_::<[u8; 2], _>(&[1u8, 2, 3])));
        assert!(is_mismatch(as_::<(u8, u16), _>(&[1u8, 2])));
        // A Vec has a length prefix, an array none.
        assert!(is_mismatch(as_::<Vec<u8>, _>(&[1u8, 2, 3])));
        assert!(is_mismatch(as_::<[u8; 3], _>(&vec![1u8, 2, 3])));
        assert!(is_mismatch(as_::<Vec<u32>, _>(&(1u32, 2u32))));
        assert_eq!(as_::<Vec<u32>, _>(&[1u32, 2][..]).unwrap(), [1, 2]);
    }

    #[test]
    fn empty_vecs() {
        assert_eq!(as_::<Vec<u32>, _>(&Vec::<u32>::new()).unwrap(), []);
        assert_eq!(as_::<Vec<u8>, _>(&Vec::<u8>::new()).unwrap(), []);
        assert_eq!(as_::<Vec<u8>, _>(&[0u8; 0][..]).unwrap(), []);
        // Through the general decoder as well (a field, not the fast path).
        assert_eq!(
            as_::<(Vec<u8>,), _>(&(Vec::<u8>::new(),)).unwrap(),
            (vec![],)
        );
        assert!(is_mismatch(as_::<Vec<u8>, _>(&vec![1u32])));
        assert!(is_mismatch(as_::<Vec<u8>, _>("")));
        // An empty sequence of any element type is an empty sequence.
        assert_eq!(
            as_::<Vec<String>, _>(&Vec::<u32>::new()).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unit_and_unit_struct() {
        as_::<(), _>(&()).unwrap();
        assert_eq!(as_::<Unit, _>(&Unit).unwrap(), Unit);
        assert!(is_mismatch(as_::<Unit, _>(&())));
        assert!(is_mismatch(as_::<(), _>(&Unit)));
        assert!(is_mismatch(as_::<Option<()>, _>(&())));
    }

    #[test]
    fn maps() {
        let m = HashMap::from([("a", 1u32), ("b", 2)]);
        let back = as_::<std::collections::BTreeMap<String, u32>, _>(&m).unwrap();
        assert_eq!(back.len(), 2);
        assert!(is_mismatch(as_::<HashMap<String, i32>, _>(&m)));
        assert!(is_mismatch(as_::<HashMap<u32, u32>, _>(&m)));
        assert!(is_mismatch(as_::<Vec<(String, u32)>, _>(&m)));
        let empty = HashMap::<String, u32>::new();
        assert!(as_::<HashMap<String, u32>, _>(&empty).unwrap().is_empty());
    }

    #[test]
    fn bytes_values_are_not_sequences() {
        use serde_bytes::{ByteBuf, Bytes};
        let buf = ByteBuf::from(vec![1u8, 2]);
        assert_eq!(as_::<ByteBuf, _>(Bytes::new(&[1, 2])).unwrap(), buf);
        assert!(is_mismatch(as_::<Vec<u8>, _>(&buf)));
        assert!(is_mismatch(as_::<ByteBuf, _>(&vec![1u8, 2])));
    }

    #[test]
    fn forged_tags_are_errors_not_panics() {
        // The right fingerprint and name in front of a wrong body: a
        // damaged message of that type.
        fn is_damaged<T>(r: Result<T>) -> bool {
            matches!(r, Err(Error::Decode(_)))
        }
        let mut p = Vec::new();
        encode_tag(&vec![String::new()], &mut p).unwrap();
        p.extend_from_slice(&[3, 0xff, 0xfe]);
        assert!(is_damaged(decode::<Vec<String>>(&p)));
        let mut p = Vec::new();
        encode_tag(&A { x: 1 }, &mut p).unwrap();
        p.extend_from_slice(&[0xff; 12]);
        assert!(is_damaged(decode::<A>(&p)));
        // A `Vec<u8>` fingerprint announcing more than there is.
        let mut p = Vec::new();
        encode_tag(&vec![1u8], &mut p).unwrap();
        p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
        assert!(is_mismatch(decode::<Vec<u8>>(&p)) || is_damaged(decode::<Vec<u8>>(&p)));
        // Every truncation of a tag is untagged, or a mismatch; of the
        // body, a damaged message of the named type.
        let whole = typed(&A { x: 1 });
        for cut in 0..whole.len() {
            let r = decode::<A>(&whole[..cut]);
            assert!(
                is_mismatch(r) || is_damaged(decode::<A>(&whole[..cut])),
                "cut at {cut}"
            );
        }
        // A name length past the end.
        let mut p = MAGIC.to_vec();
        p.extend_from_slice(&fingerprint_of(&1u8).unwrap().to_be_bytes());
        p.push(255);
        p.extend_from_slice(b"u8\x01");
        assert!(matches!(
            decode::<u8>(&p),
            Err(Error::TypeMismatch { found, .. }) if found == UNTAGGED
        ));
    }

    #[test]
    fn the_fingerprint_is_the_shape_not_the_name() {
        // Two types of different names, one shape: serde's model is the
        // contract, not `type_name` text.
        #[derive(Serialize)]
        #[serde(rename = "A")]
        struct Other {
            x: u32,
        }
        assert_eq!(as_::<A, _>(&Other { x: 5 }).unwrap(), A { x: 5 });
        assert_eq!(
            fingerprint_of(&Other { x: 1 }).unwrap(),
            fingerprint_of(&A { x: 2 }).unwrap()
        );
        assert_ne!(
            fingerprint_of(&A { x: 1 }).unwrap(),
            fingerprint_of(&B { x: 1 }).unwrap()
        );
    }

    #[test]
    fn the_tag_stays_small() {
        assert_eq!(typed(&1u8).len(), FIXED_TAG_LEN + "u8".len() + 1);
        assert_eq!(typed("ab").len(), FIXED_TAG_LEN + "str".len() + 3);
    }

    /// The cost of the wrappers on structured values, in-process (not a
    /// pass/fail figure: it prints; docs/protocol.md §2 quotes it). Run
    /// `cargo test --release -p mproc-ipc --lib decode_cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand in release"]
    fn decode_cost() {
        use std::hint::black_box;
        use std::time::Instant;

        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        struct Four {
            a: u32,
            b: String,
            c: Option<u64>,
            d: (i16, bool),
        }

        let numbers: Vec<u64> = (0..4096).collect();
        let four = Four {
            a: 7,
            b: "four".into(),
            c: Some(1 << 40),
            d: (-3, true),
        };
        let plain = postcard::to_stdvec(&numbers).unwrap();
        let payload = typed(&numbers);
        assert_eq!(decode::<Vec<u64>>(&payload).unwrap(), numbers);
        assert_eq!(decode::from_bytes::<Vec<u64>>(&plain).unwrap(), numbers);
        assert_eq!(decode::<Four>(&typed(&four)).unwrap(), four);
        type Row<'a> = (&'static str, u32, Box<dyn FnMut() + 'a>);
        let mut rows: Vec<Row<'_>> = vec![
            (
                "decode 4096 u64, postcard alone",
                50,
                Box::new(|| {
                    black_box(postcard::from_bytes::<Vec<u64>>(black_box(&plain)).unwrap());
                }),
            ),
            (
                "decode 4096 u64, decode_from_slice (limit, no hash)",
                50,
                Box::new(|| {
                    black_box(decode::from_bytes::<Vec<u64>>(black_box(&plain)).unwrap());
                }),
            ),
            (
                "decode 4096 u64, tag::decode (limit + hash)",
                50,
                Box::new(|| {
                    black_box(decode::<Vec<u64>>(black_box(&payload)).unwrap());
                }),
            ),
            (
                "encode 4096 u64, postcard alone",
                50,
                Box::new(|| {
                    black_box(postcard::to_stdvec(black_box(&numbers)).unwrap());
                }),
            ),
            (
                "encode 4096 u64, tag::encode",
                50,
                Box::new(|| {
                    black_box(typed(black_box(&numbers)));
                }),
            ),
            (
                "4-field struct, postcard encode + decode",
                5000,
                Box::new(|| {
                    let p = postcard::to_stdvec(black_box(&four)).unwrap();
                    black_box(postcard::from_bytes::<Four>(&p).unwrap());
                }),
            ),
            (
                "4-field struct, tag encode + decode",
                5000,
                Box::new(|| {
                    black_box(decode::<Four>(&typed(black_box(&four))).unwrap());
                }),
            ),
        ];
        // The best of 60 rounds, the rows interleaved so that a busy
        // machine weighs on all of them alike: µs a call.
        let mut best = vec![f64::INFINITY; rows.len()];
        for _ in 0..60 {
            for ((_, iters, f), best) in rows.iter_mut().zip(&mut best) {
                let t = Instant::now();
                for _ in 0..*iters {
                    f();
                }
                let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(*iters);
                *best = best.min(us);
            }
        }
        for ((what, _, _), us) in rows.iter().zip(best) {
            println!("{what:55} {us:8.3} µs");
        }
    }

    proptest! {
        #[test]
        fn random_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<String>(&data);
            let _ = decode::<Vec<u64>>(&data);
            let _ = decode::<(u8, Option<A>)>(&data);
            let _ = decode::<Tree>(&data);
            let _ = body(&data);
        }

        #[test]
        fn random_tagged_bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut p = Vec::new();
            encode_tag(&vec![String::new()], &mut p).unwrap();
            p.extend_from_slice(&data);
            let _ = decode::<Vec<String>>(&p);
        }

    }
}

#[cfg(test)]
mod asymmetric_impls {
    use serde::{Deserialize, Serialize};

    use super::{decode, encode};

    /// `Serialize` derived as a newtype, `Deserialize` through `u32`: the
    /// two make different serde calls, yet a message of this type sent by
    /// this program is this type.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(try_from = "u32")]
    struct Port(u32);

    impl TryFrom<u32> for Port {
        type Error = String;
        fn try_from(n: u32) -> Result<Self, String> {
            if n > 65535 {
                return Err(format!("port {n} is out of range"));
            }
            Ok(Port(n))
        }
    }

    #[test]
    fn a_type_whose_impls_differ_round_trips() {
        let mut payload = Vec::new();
        encode(&vec![Port(80), Port(443)], &mut payload).unwrap();
        assert_eq!(
            decode::<Vec<Port>>(&payload).unwrap(),
            [Port(80), Port(443)]
        );
        let mut payload = Vec::new();
        encode(&Port(70_000), &mut payload).unwrap();
        let e = decode::<Port>(&payload).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode message: port 70000 is out of range"
        );
    }

    #[test]
    fn another_type_is_still_a_mismatch() {
        let mut payload = Vec::new();
        encode(&Port(80), &mut payload).unwrap();
        assert!(decode::<String>(&payload).unwrap_err().is_type_mismatch());
        assert!(decode::<(u8, u8)>(&payload).unwrap_err().is_type_mismatch());
        let mut payload = Vec::new();
        encode(&"x", &mut payload).unwrap();
        assert!(decode::<Port>(&payload).unwrap_err().is_type_mismatch());
    }
}
