//! The byte-sequence fast path of typed messages.
//!
//! postcard writes a `Vec<u8>` element by element (one `serialize_u8`
//! call per byte) and reads it back the same way, which holds a 1 MiB
//! `send(&Vec<u8>)` to a fraction of `send_bytes`. Yet the body it
//! produces for every byte-sequence type is the same simple shape: a
//! varint length, then the bytes. For the types listed in [`Shape`] this
//! module writes and reads that body directly: the sender gathers the tag,
//! the varint and the caller's own bytes into one write (no encode copy),
//! and the receiver reads the bytes straight into the value's buffer.
//!
//! The wire bytes are exactly postcard's (so a message is the same whether
//! or not either end takes the fast path), the tag and its fingerprint
//! are the general encoder's (every string has one shape fingerprint,
//! every `bytes` value another, a sequence of `u8` one when empty and one
//! when not: [`fingerprint_of_bytes`]), and anything unusual (another
//! shape's tag, a non-canonical varint, a length that disagrees with the
//! frame) falls back to the general decoder, which reports it as before.
//!
//! The types are recognised by a type identity that ignores lifetimes
//! ([`type_id_of`]): `send`'s `T` carries no `'static` bound. No type name
//! text is read.

use std::any::TypeId;
use std::marker::PhantomData;
use std::mem::{size_of, ManuallyDrop};

use serde_bytes::{ByteBuf, Bytes};

use super::shape;

/// The longest varint postcard writes for a `usize`.
pub(crate) const MAX_VARINT: usize = 10;

/// The identity of `T` with every lifetime erased (`&'a [u8]` and
/// `&'static [u8]` are one type here), so it needs no `T: 'static`.
pub(crate) fn type_id_of<T: ?Sized>() -> TypeId {
    trait Erased {
        fn id(&self) -> TypeId
        where
            Self: 'static;
    }
    impl<T: ?Sized> Erased for PhantomData<T> {
        fn id(&self) -> TypeId
        where
            Self: 'static,
        {
            TypeId::of::<T>()
        }
    }
    let marker = PhantomData::<T>;
    let erased: &dyn Erased = &marker;
    // SAFETY: only the trait object's lifetime bound changes; `PhantomData`
    // holds no data, and `id` reads nothing of `T`: it returns the
    // (lifetime-free) identity of the type `T` names.
    let erased: &(dyn Erased + 'static) = unsafe { std::mem::transmute(erased) };
    erased.id()
}

/// The borrowed bytes of `value` when `T` is a byte sequence whose
/// postcard body is a varint length then these bytes: `Vec<u8>`, `[u8]`,
/// `&[u8]`, `String`, `str`, `&str`, `ByteBuf`, `Bytes`, `&Bytes`.
pub(crate) fn as_bytes<T: ?Sized>(value: &T) -> Option<&[u8]> {
    let id = type_id_of::<T>();
    if id == TypeId::of::<Vec<u8>>() {
        // SAFETY: `T` is `Vec<u8>` (lifetimes aside; it has none).
        Some(unsafe { &*(value as *const T as *const Vec<u8>) })
    } else if id == TypeId::of::<String>() {
        // SAFETY: `T` is `String`.
        Some(unsafe { &*(value as *const T as *const String) }.as_bytes())
    } else if id == TypeId::of::<ByteBuf>() {
        // SAFETY: `T` is `ByteBuf`.
        Some(unsafe { &*(value as *const T as *const ByteBuf) }.as_slice())
    } else if id == TypeId::of::<&[u8]>() {
        // SAFETY: `T` is `&'a [u8]` for the caller's `'a`, which outlives
        // the returned borrow of `value`.
        Some(*unsafe { &*(value as *const T as *const &[u8]) })
    } else if id == TypeId::of::<&str>() {
        // SAFETY: `T` is `&'a str`, as above.
        Some(unsafe { &*(value as *const T as *const &str) }.as_bytes())
    } else if id == TypeId::of::<&Bytes>() {
        // SAFETY: `T` is `&'a Bytes`, as above.
        let bytes: &Bytes = unsafe { *(value as *const T as *const &Bytes) };
        Some(&**bytes)
    } else if id == TypeId::of::<[u8]>() || id == TypeId::of::<str>() {
        unsized_bytes(value)
    } else if id == TypeId::of::<Bytes>() {
        // `Bytes` is `#[repr(transparent)]` over `[u8]`: same pointer
        // metadata.
        unsized_bytes(value)
    } else {
        None
    }
}

/// The shape fingerprint of the byte sequence `bytes` of a `T` for which
/// [`as_bytes`] answered: what the general encoder computes for it (a
/// string; a `bytes` value; or a sequence of `u8`, empty or not), without
/// a call per byte.
pub(crate) fn fingerprint_of_bytes<T: ?Sized>(bytes: &[u8]) -> u64 {
    let id = type_id_of::<T>();
    if id == TypeId::of::<String>() || id == TypeId::of::<&str>() || id == TypeId::of::<str>() {
        shape::STR_FINGERPRINT
    } else if id == TypeId::of::<ByteBuf>()
        || id == TypeId::of::<Bytes>()
        || id == TypeId::of::<&Bytes>()
    {
        shape::BYTES_FINGERPRINT
    } else {
        shape::u8_seq_fingerprint(bytes.is_empty())
    }
}

/// The shape fingerprint of a received byte sequence of shape `shape`.
pub(crate) fn fingerprint_of_shape(shape: Shape, empty: bool) -> u64 {
    match shape {
        Shape::Vec => shape::u8_seq_fingerprint(empty),
        Shape::String => shape::STR_FINGERPRINT,
        Shape::ByteBuf => shape::BYTES_FINGERPRINT,
    }
}

/// `value` (a `[u8]`, `str` or `Bytes`, all a slice of bytes with a byte
/// length as pointer metadata) as `&[u8]`.
fn unsized_bytes<T: ?Sized>(value: &T) -> Option<&[u8]> {
    if size_of::<&T>() != size_of::<&[u8]>() {
        return None;
    }
    // SAFETY: the caller checked `T` is `[u8]`, `str` or the transparent
    // `Bytes`: a reference to it is a (pointer, byte length) pair laid out
    // as `&[u8]` (sizes checked above), to bytes valid for the borrow.
    Some(unsafe { std::ptr::read(&value as *const &T as *const &[u8]) })
}

/// How a received body of bytes becomes the caller's `T`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shape {
    /// `Vec<u8>`.
    Vec,
    /// `String` (the bytes must be UTF-8).
    String,
    /// `serde_bytes::ByteBuf`.
    ByteBuf,
}

/// The [`Shape`] of a receivable `T`, or `None` when `T` takes the
/// general decoder.
pub(crate) fn shape_of<T>() -> Option<Shape> {
    let id = type_id_of::<T>();
    if id == TypeId::of::<Vec<u8>>() {
        Some(Shape::Vec)
    } else if id == TypeId::of::<String>() {
        Some(Shape::String)
    } else if id == TypeId::of::<ByteBuf>() {
        Some(Shape::ByteBuf)
    } else {
        None
    }
}

/// Turns received body bytes into `T` of shape `shape` (from
/// [`shape_of::<T>()`](shape_of)); invalid UTF-8 for a `String` is
/// postcard's own error.
pub(crate) fn into_value<T>(shape: Shape, bytes: Vec<u8>) -> Result<T, postcard::Error> {
    debug_assert_eq!(shape_of::<T>(), Some(shape));
    match shape {
        // SAFETY: `shape_of::<T>()` is `Shape::Vec`, so `T` is `Vec<u8>`.
        Shape::Vec => Ok(unsafe { cast::<Vec<u8>, T>(bytes) }),
        Shape::String => match String::from_utf8(bytes) {
            // SAFETY: `shape_of::<T>()` is `Shape::String`, so `T` is `String`.
            Ok(s) => Ok(unsafe { cast::<String, T>(s) }),
            Err(_) => Err(postcard::Error::DeserializeBadUtf8),
        },
        // SAFETY: `shape_of::<T>()` is `Shape::ByteBuf`, so `T` is `ByteBuf`.
        Shape::ByteBuf => Ok(unsafe { cast::<ByteBuf, T>(ByteBuf::from(bytes)) }),
    }
}

/// Moves `value` out as `T`.
///
/// # Safety
/// `U` and `T` must be the same type.
unsafe fn cast<U, T>(value: U) -> T {
    let value = ManuallyDrop::new(value);
    // SAFETY: the caller guarantees `U` is `T`; `value` is not dropped.
    unsafe { std::ptr::read(&*value as *const U as *const T) }
}

/// Appends postcard's varint of `n` to `out`.
pub(crate) fn push_varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a canonical varint at the start of `bytes`: `(value, its
/// length)`, or `None` if it is cut short, overlong, or overflows a
/// `usize` (the general decoder then judges the body).
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().take(MAX_VARINT).enumerate() {
        let bits = u64::from(b & 0x7f);
        let shift = 7 * i as u32;
        if shift >= 64 || (shift > 0 && bits >> (64 - shift) != 0) {
            return None;
        }
        value |= bits << shift;
        if b & 0x80 == 0 {
            // Canonical: no trailing zero group (except the value 0).
            if i > 0 && b == 0 {
                return None;
            }
            return usize::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard() {
        for n in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 20,
            usize::MAX,
        ] {
            let mut ours = Vec::new();
            push_varint(n, &mut ours);
            assert_eq!(ours, postcard::to_stdvec(&n).unwrap(), "{n}");
            assert_eq!(read_varint(&ours), Some((n, ours.len())));
        }
        // Overlong, cut short, overflowing: left to the general decoder.
        assert_eq!(read_varint(&[0x80, 0x00]), None);
        assert_eq!(read_varint(&[0x80]), None);
        assert_eq!(read_varint(&[0xff; 11]), None);
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }

    #[test]
    fn the_listed_types_and_only_they_are_bytes() {
        let v = vec![1u8, 2, 3];
        assert_eq!(as_bytes(&v), Some(&[1u8, 2, 3][..]));
        assert_eq!(as_bytes(&v[..]), Some(&[1u8, 2, 3][..]));
        assert_eq!(as_bytes(&&v[..]), Some(&[1u8, 2, 3][..]));
        assert_eq!(as_bytes("hé"), Some("hé".as_bytes()));
        assert_eq!(as_bytes(&"hé"), Some("hé".as_bytes()));
        assert_eq!(as_bytes(&String::from("x")), Some(&b"x"[..]));
        assert_eq!(as_bytes(&ByteBuf::from(vec![9u8])), Some(&[9u8][..]));
        assert_eq!(as_bytes(Bytes::new(&[7u8, 8])), Some(&[7u8, 8][..]));
        assert_eq!(as_bytes(&Bytes::new(&[7u8, 8])), Some(&[7u8, 8][..]));
        // Lookalikes take the general path.
        assert_eq!(as_bytes(&vec![1i8]), None);
        assert_eq!(as_bytes(&[1u8, 2]), None); // an array: no length prefix
        assert_eq!(as_bytes(&vec![vec![1u8]]), None);
        assert_eq!(as_bytes(&1u8), None);
        assert_eq!(shape_of::<Vec<u16>>(), None);
        assert_eq!(shape_of::<Box<[u8]>>(), None);
    }

    #[test]
    fn the_fast_body_is_postcards_body() {
        fn check<T: serde::Serialize + ?Sized>(value: &T) {
            let mut ours = Vec::new();
            let bytes = as_bytes(value).unwrap();
            push_varint(bytes.len(), &mut ours);
            ours.extend_from_slice(bytes);
            assert_eq!(ours, postcard::to_stdvec(value).unwrap());
        }
        check(&vec![5u8; 300]);
        check(&b"abc"[..]);
        check("ünï");
        check(&ByteBuf::from(vec![0u8; 200]));
        check(Bytes::new(b"xyz"));
    }

    #[test]
    fn the_fast_fingerprint_is_the_general_encoders() {
        fn check<T: serde::Serialize + ?Sized>(value: &T) {
            let bytes = as_bytes(value).unwrap();
            assert_eq!(
                fingerprint_of_bytes::<T>(bytes),
                shape::fingerprint(value).unwrap(),
                "{}",
                std::any::type_name::<T>()
            );
        }
        for v in [vec![], vec![5u8; 300]] {
            check(&v);
            check(&v[..]);
            check(&&v[..]);
            check(&ByteBuf::from(v.clone()));
            check(Bytes::new(&v));
            check(&Bytes::new(&v));
        }
        for s in ["", "ünï"] {
            check(s);
            check(&s);
            check(&s.to_owned());
        }
        assert_eq!(
            fingerprint_of_shape(Shape::Vec, false),
            shape::fingerprint(&vec![1u8]).unwrap()
        );
        assert_eq!(
            fingerprint_of_shape(Shape::Vec, true),
            shape::fingerprint(&Vec::<u8>::new()).unwrap()
        );
        assert_eq!(
            fingerprint_of_shape(Shape::String, false),
            shape::fingerprint("x").unwrap()
        );
        assert_eq!(
            fingerprint_of_shape(Shape::ByteBuf, true),
            shape::fingerprint(&ByteBuf::new()).unwrap()
        );
    }
}
