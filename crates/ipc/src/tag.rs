//! Typed messages: a small tag, then the value's postcard encoding.
//!
//! `send(&value)` writes one frame whose payload is
//!
//! | bytes | content |
//! |---|---|
//! | 4 | [`MAGIC`] (`F0 6D 70 54`, `"\xF0mpT"`) |
//! | 8 | [`fingerprint_of::<T>()`](fingerprint_of), big-endian |
//! | 1 | `n`, the length of the sender's type name |
//! | n | the sender's `std::any::type_name::<T>()`, UTF-8, cut to 255 bytes on a character boundary |
//! | … | the postcard body |
//!
//! `recv::<B>()` checks the magic and the fingerprint before decoding, so a
//! message sent as `A` is [`Error::TypeMismatch`] naming both types, never
//! garbage. The fingerprint is FNV-1a 64 of the *normalised* type name
//! ([`normalise_type_name`]), so borrowed and owned forms of the same data
//! are one type: `str` ≡ `String`, `[T]` ≡ `Vec<T>`, `&T` ≡ `&mut T` ≡ `T`,
//! `Box<T>`/`Rc<T>`/`Arc<T>`/`Cow<T>` ≡ `T`, at any nesting depth
//! (`&[&str]` ≡ `Vec<String>`, `Option<&str>` ≡ `Option<String>`).
//! Arrays `[T; N]` stay distinct from `Vec<T>`: postcard writes an array
//! without a length prefix, so the bytes differ.
//!
//! Type names come from `std::any::type_name`, whose text is only stable
//! within one compiler version: both ends are normally the same binary.
//! A `send_bytes` payload that happens to start with the magic and a
//! matching fingerprint is the one undetectable case (probability 2⁻⁶⁴).
//!
//! The raw payload of a typed message — what `recv_bytes` returns — is the
//! whole payload, tag included, so `recv_bytes` then `send_bytes` forwards
//! a typed message unchanged; [`body`] strips the tag.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{depth, Error, Result};

pub(crate) mod bulk;

/// The first four bytes of every typed payload.
pub const MAGIC: [u8; 4] = *b"\xF0mpT";

/// What [`Error::TypeMismatch`]'s `found` says for an untagged payload.
const UNTAGGED: &str = "bytes (send_bytes)";

/// Magic, fingerprint and name length.
const FIXED_TAG_LEN: usize = 4 + 8 + 1;

/// The canonical owned names the normalisation maps to.
const STRING: &str = "alloc::string::String";
const VEC: &str = "alloc::vec::Vec";

/// Nesting deeper than this is kept verbatim rather than parsed.
const MAX_DEPTH: usize = 64;

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
    let start = out.len();
    encode_tag::<T>(out);
    if let Some(bytes) = bulk::as_bytes(value) {
        // postcard's body for a byte sequence, without its per-byte calls.
        bulk::push_varint(bytes.len(), out);
        out.extend_from_slice(bytes);
        return Ok(());
    }
    match crate::error::to_io(value, &mut *out) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(start);
            Err(Error::Encode(e))
        }
    }
}

/// Appends the tag of type `T` alone to `out` (for callers that write the
/// body from elsewhere, e.g. with [`crate::frame::write_frame_parts`]).
pub fn encode_tag<T: ?Sized>(out: &mut Vec<u8>) {
    let name = truncate_utf8(std::any::type_name::<T>(), 255);
    out.reserve(FIXED_TAG_LEN + name.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&fingerprint_of::<T>().to_be_bytes());
    // `truncate_utf8` keeps at most 255 bytes.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// Decodes a typed payload as a `T`.
///
/// * no tag (a `send_bytes` payload, or a malformed tag):
///   [`Error::TypeMismatch`] with `found: "bytes (send_bytes)"`;
/// * another type's fingerprint: [`Error::TypeMismatch`] naming
///   `type_name::<T>()` and the sender's type name;
/// * a body that is not a valid `T` (or has bytes left over):
///   [`Error::Decode`];
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
    let expected = std::any::type_name::<T>();
    let Some(tag) = parse(payload) else {
        return Err(Error::TypeMismatch {
            expected: expected.to_owned(),
            found: UNTAGGED.to_owned(),
        });
    };
    if tag.fingerprint != fingerprint_of::<T>() {
        return Err(Error::TypeMismatch {
            expected: expected.to_owned(),
            found: String::from_utf8_lossy(tag.name).into_owned(),
        });
    }
    if let Some(shape) = bulk::shape_of::<T>() {
        match bulk::read_varint(tag.body) {
            Some((len, n)) if tag.body.len() - n == len => {
                return bulk::into_value(shape, tag.body[n..].to_vec()).map_err(Error::decode);
            }
            // Anything else is for the general decoder to describe.
            _ => {}
        }
    }
    decode_body(tag.body, depth::DEFAULT_LIMIT)
}

/// Where the body of a byte-sequence `T` starts in a typed payload of
/// `len` bytes whose first bytes are `head` (at least
/// `min(len, MAX_BULK_PREFIX)` of them): `Some(offset)` when `head` holds
/// `T`'s tag and a canonical varint announcing exactly `len - offset`
/// bytes. `None` sends the payload to [`decode`].
pub(crate) fn bulk_body_offset<T>(head: &[u8], len: usize) -> Option<usize> {
    let tag = parse(head)?;
    if tag.fingerprint != fingerprint_of::<T>() {
        return None;
    }
    let start = head.len() - tag.body.len();
    let (body_len, n) = bulk::read_varint(tag.body)?;
    (len.checked_sub(start + n)? == body_len).then_some(start + n)
}

/// The longest tag plus varint: what [`bulk_body_offset`] needs to see.
pub(crate) const MAX_BULK_PREFIX: usize = FIXED_TAG_LEN + 255 + bulk::MAX_VARINT;

/// Decodes a postcard body as a `T` nesting at most `max_depth` levels.
fn decode_body<T: DeserializeOwned>(body: &[u8], max_depth: usize) -> Result<T> {
    let limit = depth::Limit::new(max_depth);
    let mut de = postcard::Deserializer::from_bytes(body);
    let value = T::deserialize(depth::Deserializer::new(&mut de, &limit));
    // postcard drops a custom error's text: the limit kept it.
    let value = value.map_err(|e| limit.text_of(e));
    match value.and_then(|v| de.finalize().map(|rest| (v, rest)).map_err(Err)) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::decode_msg(format!(
            "{} trailing bytes after a {}",
            rest.len(),
            std::any::type_name::<T>()
        ))),
        Err(_) if limit.exceeded() => {
            Err(Error::decode_msg(depth::TooDeep(limit.max()).to_string()))
        }
        Err(Ok(text)) => Err(Error::decode_msg(text)),
        Err(Err(e)) => Err(Error::decode(e)),
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

/// The 8-byte fingerprint of `T`: FNV-1a 64 of
/// `normalise_type_name(type_name::<T>())`.
///
/// ```
/// use mproc_ipc::__private::tag::fingerprint_of;
/// assert_eq!(fingerprint_of::<&str>(), fingerprint_of::<String>());
/// assert_eq!(fingerprint_of::<&[&str]>(), fingerprint_of::<Vec<String>>());
/// assert_ne!(fingerprint_of::<u32>(), fingerprint_of::<String>());
/// ```
pub fn fingerprint_of<T: ?Sized>() -> u64 {
    // Normalising parses the name: remember the answer per type name.
    static CACHE: OnceLock<RwLock<HashMap<&'static str, u64>>> = OnceLock::new();
    thread_local! {
        // The last name asked on this thread, by address and length: a
        // loop sending one type pays no hashing and no lock. (Equal
        // address and length of a `&'static str` mean equal text.)
        static LAST: Cell<(usize, usize, u64)> = const { Cell::new((0, 0, 0)) };
    }
    let name = std::any::type_name::<T>();
    let key = (name.as_ptr() as usize, name.len());
    if let Ok(Some(fp)) = LAST.try_with(|last| {
        let (ptr, len, fp) = last.get();
        ((ptr, len) == key).then_some(fp)
    }) {
        return fp;
    }
    let fp = fingerprint_by_name(name, &CACHE);
    let _ = LAST.try_with(|last| last.set((key.0, key.1, fp)));
    fp
}

fn fingerprint_by_name(
    name: &'static str,
    cache: &'static OnceLock<RwLock<HashMap<&'static str, u64>>>,
) -> u64 {
    let cache = cache.get_or_init(Default::default);
    if let Some(&fp) = cache
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(name)
    {
        return fp;
    }
    let fp = fnv1a64(normalise_type_name(name).as_bytes());
    cache
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(name, fp);
    fp
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
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

/// Rewrites a `std::any::type_name` so borrowed and owned forms of the same
/// data read the same.
///
/// * `&T`, `&mut T` → `T` (at any depth);
/// * `str`, `String` → `alloc::string::String`;
/// * `[T]`, `Vec<T>` → `alloc::vec::Vec<T>` (arrays `[T; N]` are kept:
///   postcard encodes them differently);
/// * `Box<T>`, `Rc<T>`, `Arc<T>`, `Cow<T>` → `T` (serde encodes them as
///   `T`);
/// * `std::` and `alloc::` spellings of those paths are treated alike,
///   lifetime arguments and the default `Global` allocator are dropped, and
///   spacing is canonical (`(A, B)`, `Foo<A, B>`, `[T; N]`).
///
/// Anything else (user types, `Option`, `HashMap`, tuples, …) keeps its
/// path with normalised arguments. The function is total: any text comes
/// back as some string.
///
/// ```
/// use mproc_ipc::__private::tag::normalise_type_name;
/// assert_eq!(normalise_type_name("&[&str]"), "alloc::vec::Vec<alloc::string::String>");
/// assert_eq!(normalise_type_name("alloc::boxed::Box<[u8]>"), "alloc::vec::Vec<u8>");
/// assert_eq!(normalise_type_name("[u8; 4]"), "[u8; 4]");
/// ```
pub fn normalise_type_name(name: &str) -> String {
    let mut p = Parser {
        s: name,
        pos: 0,
        depth: 0,
    };
    let mut out = String::new();
    loop {
        out.push_str(&p.ty());
        // A stray closing bracket or separator at top level: keep it.
        match p.peek() {
            None => break,
            Some(c) => {
                out.push(char::from(c));
                p.pos += 1;
            }
        }
    }
    out
}

/// A recursive-descent reader of `type_name` text. Only ASCII delimiters
/// are ever split on, so every slice falls on a character boundary.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

/// Bytes that end an atom of a type name.
fn is_delimiter(b: u8) -> bool {
    matches!(b, b'<' | b'>' | b'(' | b')' | b'[' | b']' | b',' | b';')
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn skip_ws(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// One type, up to a delimiter that belongs to the caller.
    fn ty(&mut self) -> String {
        if self.depth >= MAX_DEPTH {
            // Too deep to be a real type name: keep the rest as it is.
            let rest = self.rest().to_owned();
            self.pos = self.s.len();
            return rest;
        }
        self.depth += 1;
        let t = self.ty_inner();
        self.depth -= 1;
        t
    }

    fn ty_inner(&mut self) -> String {
        self.skip_ws();
        match self.peek() {
            Some(b'&') => {
                self.pos += 1;
                self.skip_ws();
                if self.eat(b'\'') {
                    // A lifetime: `&'a T`.
                    while self
                        .peek()
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        self.pos += 1;
                    }
                    self.skip_ws();
                }
                if self.rest().starts_with("mut ") {
                    self.pos += 4;
                }
                self.ty()
            }
            Some(b'[') => {
                self.pos += 1;
                let inner = self.ty();
                self.skip_ws();
                if self.eat(b';') {
                    let len = self.atom();
                    self.eat(b']');
                    format!("[{inner}; {}]", len.trim())
                } else if self.eat(b']') {
                    format!("{VEC}<{inner}>")
                } else {
                    format!("[{inner}")
                }
            }
            Some(b'(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.list(b')');
                if items.len() == 1 && trailing_comma {
                    format!("({},)", items[0])
                } else {
                    format!("({})", items.join(", "))
                }
            }
            _ => self.term(),
        }
    }

    /// Text up to the next delimiter (`->` does not end it).
    fn atom(&mut self) -> String {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b'-' && self.s.as_bytes().get(self.pos + 1) == Some(&b'>') {
                self.pos += 2;
                continue;
            }
            if is_delimiter(b) {
                break;
            }
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("").to_owned()
    }

    /// Comma-separated types up to `close` (consumed when present).
    /// Returns the items and whether a comma preceded `close`.
    fn list(&mut self, close: u8) -> (Vec<String>, bool) {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.peek().is_none() || self.eat(close) {
                return (items, trailing_comma);
            }
            items.push(self.ty());
            trailing_comma = self.eat(b',');
            if !trailing_comma && !self.eat(close) {
                // A delimiter that does not belong here: keep it, move on.
                let Some(b) = self.peek() else {
                    return (items, false);
                };
                if let Some(last) = items.last_mut() {
                    last.push(char::from(b));
                }
                self.pos += 1;
                continue;
            }
            if !trailing_comma {
                return (items, false);
            }
        }
    }

    /// A path with generic arguments, or anything else type_name can print
    /// (`dyn A + B`, `fn(A) -> B`, closures).
    fn term(&mut self) -> String {
        let first = self.atom();
        let mut out = first.trim_end().to_owned();
        let mut args = None;
        let mut simple = true;
        loop {
            match self.peek() {
                Some(b'<') => {
                    self.pos += 1;
                    let (items, _) = self.list(b'>');
                    let items: Vec<String> =
                        items.into_iter().filter(|a| !a.starts_with('\'')).collect();
                    if args.is_some() {
                        simple = false;
                    }
                    if !items.is_empty() {
                        out.push('<');
                        out.push_str(&items.join(", "));
                        out.push('>');
                    }
                    args = Some(items);
                }
                Some(b'(') => {
                    self.pos += 1;
                    let (items, _) = self.list(b')');
                    out.push('(');
                    out.push_str(&items.join(", "));
                    out.push(')');
                    simple = false;
                }
                _ => break,
            }
            let more = self.atom();
            if !more.trim().is_empty() {
                simple = false;
                out.push_str(more.trim_end());
            }
        }
        if !simple {
            return out;
        }
        canonical(first.trim(), args.as_deref()).unwrap_or(out)
    }
}

/// The canonical form of `path<args>` when it is one of the borrowed/owned
/// families, else `None`.
fn canonical(path: &str, args: Option<&[String]>) -> Option<String> {
    let path = path.strip_prefix("::").unwrap_or(path);
    let path = path
        .strip_prefix("std::")
        .or_else(|| path.strip_prefix("alloc::"))
        .unwrap_or(path);
    // Drop a default allocator argument: `Vec<T, Global>`, `Box<T, Global>`.
    let args = match args {
        Some([t, a]) if a.ends_with("alloc::Global") || a == "Global" => {
            Some(std::slice::from_ref(t))
        }
        other => other,
    };
    match (path, args) {
        ("str" | "String" | "string::String", None | Some([])) => Some(STRING.to_owned()),
        ("Vec" | "vec::Vec", Some([t])) => Some(format!("{VEC}<{t}>")),
        (
            "Box" | "boxed::Box" | "Rc" | "rc::Rc" | "Arc" | "sync::Arc" | "Cow" | "borrow::Cow",
            Some([t]),
        ) => Some(t.clone()),
        _ => None,
    }
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
        assert_eq!(&p[4..12], &fingerprint_of::<u8>().to_be_bytes());
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
    fn bad_body_is_decode_error() {
        let mut p = Vec::new();
        encode_tag::<String>(&mut p);
        p.extend_from_slice(&[5, b'a']); // says 5 bytes, has 1
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

    #[test]
    fn normalisation_table() {
        let cases = [
            ("str", STRING),
            ("&str", STRING),
            ("&mut str", STRING),
            ("&'static str", STRING),
            ("String", STRING),
            ("std::string::String", STRING),
            ("[u8]", "alloc::vec::Vec<u8>"),
            ("&[u8]", "alloc::vec::Vec<u8>"),
            ("alloc::vec::Vec<u8>", "alloc::vec::Vec<u8>"),
            (
                "alloc::vec::Vec<u8, alloc::alloc::Global>",
                "alloc::vec::Vec<u8>",
            ),
            ("&[&str]", "alloc::vec::Vec<alloc::string::String>"),
            ("&&&u8", "u8"),
            ("alloc::boxed::Box<alloc::boxed::Box<str>>", STRING),
            ("alloc::borrow::Cow<[u8]>", "alloc::vec::Vec<u8>"),
            ("alloc::sync::Arc<&str>", STRING),
            ("[&str; 4]", "[alloc::string::String; 4]"),
            ("(&str,)", "(alloc::string::String,)"),
            (
                "(&str, &[u8])",
                "(alloc::string::String, alloc::vec::Vec<u8>)",
            ),
            ("()", "()"),
            (
                "core::option::Option<&str>",
                "core::option::Option<alloc::string::String>",
            ),
            ("my::Foo<'_, &str>", "my::Foo<alloc::string::String>"),
            ("fn(&str) -> u8", "fn(alloc::string::String) -> u8"),
            (
                "dyn core::fmt::Debug + core::marker::Send",
                "dyn core::fmt::Debug + core::marker::Send",
            ),
            ("my::main::{{closure}}", "my::main::{{closure}}"),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_type_name(input), want, "{input}");
            assert_eq!(normalise_type_name(want), want, "idempotent on {want}");
        }
        // Real type names agree.
        assert_eq!(fingerprint_of::<&[&str]>(), fingerprint_of::<Vec<String>>());
        assert_eq!(fingerprint_of::<[u8]>(), fingerprint_of::<Vec<u8>>());
        assert_eq!(fingerprint_of::<&mut String>(), fingerprint_of::<str>());
        assert_eq!(fingerprint_of::<Box<A>>(), fingerprint_of::<A>());
        assert_ne!(fingerprint_of::<A>(), fingerprint_of::<B>());
        assert_ne!(fingerprint_of::<[u8; 2]>(), fingerprint_of::<Vec<u8>>());
        assert_ne!(fingerprint_of::<u32>(), fingerprint_of::<i32>());
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
        on_thread(256 * 1024, || {
            // Tree: variant index 1 (Node) per level, then 0 (Leaf).
            let mut p = Vec::new();
            encode_tag::<Tree>(&mut p);
            p.resize(p.len() + LEVELS, 1);
            p.push(0);
            assert_eq!(decode::<Tree>(&p).unwrap_err().to_string(), TOO_DEEP);
            // List: `Some` per level, then `None`.
            let mut p = Vec::new();
            encode_tag::<List>(&mut p);
            p.resize(p.len() + LEVELS, 1);
            p.push(0);
            assert_eq!(decode::<List>(&p).unwrap_err().to_string(), TOO_DEEP);
            // Nest: a one-element sequence per level, then an empty one.
            let mut p = Vec::new();
            encode_tag::<Nest>(&mut p);
            p.resize(p.len() + LEVELS, 1);
            p.push(0);
            assert_eq!(decode::<Nest>(&p).unwrap_err().to_string(), TOO_DEEP);
        });
    }

    #[test]
    fn nesting_up_to_the_limit_round_trips_on_a_2_mib_stack() {
        // Rust's default spawned-thread stack, in whatever build runs this.
        on_thread(2 * 1024 * 1024, || {
            let at_limit = tree(depth::DEFAULT_LIMIT - 1);
            assert_eq!(decode::<Tree>(&typed(&at_limit)).unwrap(), at_limit);
            let over = tree(depth::DEFAULT_LIMIT);
            assert_eq!(
                decode::<Tree>(&typed(&over)).unwrap_err().to_string(),
                TOO_DEEP
            );

            let list = |n: usize| {
                (0..n).fold(List { next: None }, |l, _| List {
                    next: Some(Box::new(l)),
                })
            };
            let at_limit = list(depth::DEFAULT_LIMIT / 2 - 1);
            assert_eq!(decode::<List>(&typed(&at_limit)).unwrap(), at_limit);
            let over = list(depth::DEFAULT_LIMIT / 2);
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
            decode_body(&postcard::to_stdvec(v).unwrap(), max)
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
            encode_tag::<Vec<String>>(&mut p);
            p.extend_from_slice(&data);
            let _ = decode::<Vec<String>>(&p);
        }

        #[test]
        fn random_names_never_panic(name in "\\PC{0,40}", sym in "[&\\[\\]();<>, 'a-z:]{0,40}") {
            let _ = normalise_type_name(&name);
            let _ = normalise_type_name(&sym);
        }

    }
}
