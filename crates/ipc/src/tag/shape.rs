//! The shape fingerprint of a typed message: a hash of the serde data
//! model calls that encode (on the sender) and decode (on the receiver)
//! the value.
//!
//! serde documents its data model and `derive` generates both sides of it
//! from the type's source, so the two ends of a message make matching
//! calls exactly when they agree on the value's structure: the same
//! primitive kinds, the same struct, enum and variant names, the same field
//! names. On the sender, `crate::encode::Serializer` wraps postcard's
//! serializer and reports every call it forwards to a [`Fingerprint`]; on
//! the receiver, the decoder's one wrapper (`crate::decode::Deserializer`,
//! which also counts nesting) reports the calls the receiver's
//! `Deserialize` makes. The fingerprint hashes both in one canonical
//! form:
//!
//! | event | hashed as |
//! |---|---|
//! | `bool`, `i8`…`i128`, `u8`…`u128`, `f32`, `f64`, `char` | its kind |
//! | `str` / `string` | one kind, `STR` |
//! | `bytes` / `byte_buf` | one kind, `BYTES` |
//! | `unit` | `UNIT` |
//! | `none` / `some` | `NONE` / `SOME`, then the value |
//! | `unit_struct(name)`, `newtype_struct(name)` | kind and name (then the value) |
//! | `seq` | `SEQ`, the elements' shapes with runs of equal shapes counted once, `END` |
//! | `map` | `MAP`, the entries' shapes likewise, `END` |
//! | `tuple(len)`, `tuple_struct(name, len)` | kind, name, `len`, each element, `END` |
//! | `struct(name)` | `STRUCT`, name, each field's name then value, `END` |
//! | enum variant | `ENUM`, enum name, variant index and name, the variant kind (unit, newtype, tuple with `len`, struct), its content, `END` for tuple and struct |
//!
//! Runs of equal element shapes are counted once so a sequence's shape
//! does not grow with its length: every non-empty `Vec<u8>` has one
//! fingerprint, which the byte-sequence fast path ([`super::bulk`])
//! writes and checks without touching the bytes.
//!
//! The hash is not cryptographic: it tells honest peers' types apart.
//! A forged fingerprint only changes which error a hostile payload gets,
//! since the receiver decodes (with its depth limit) before comparing.

use std::cell::Cell;

use serde::ser::Serialize;

use crate::encode::{self, Record};
use crate::EncodeError;

/// The running hash of one message's events.
pub(crate) struct Fingerprint(Cell<u64>);

/// Where every hash (and every element's own hash) starts.
const SEED: u64 = 0x6d70_726f_6373_6870; // "mprocshp"

/// The event kinds.
pub(crate) mod kind {
    pub const BOOL: u64 = 1;
    pub const I8: u64 = 2;
    pub const I16: u64 = 3;
    pub const I32: u64 = 4;
    pub const I64: u64 = 5;
    pub const I128: u64 = 6;
    pub const U8: u64 = 7;
    pub const U16: u64 = 8;
    pub const U32: u64 = 9;
    pub const U64: u64 = 10;
    pub const U128: u64 = 11;
    pub const F32: u64 = 12;
    pub const F64: u64 = 13;
    pub const CHAR: u64 = 14;
    pub const STR: u64 = 15;
    pub const BYTES: u64 = 16;
    pub const UNIT: u64 = 17;
    pub const NONE: u64 = 18;
    pub const SOME: u64 = 19;
    pub const UNIT_STRUCT: u64 = 20;
    pub const NEWTYPE_STRUCT: u64 = 21;
    pub const SEQ: u64 = 22;
    pub const TUPLE: u64 = 23;
    pub const TUPLE_STRUCT: u64 = 24;
    pub const MAP: u64 = 25;
    pub const STRUCT: u64 = 26;
    pub const ENUM: u64 = 27;
    pub const UNIT_VARIANT: u64 = 28;
    pub const NEWTYPE_VARIANT: u64 = 29;
    pub const TUPLE_VARIANT: u64 = 30;
    pub const STRUCT_VARIANT: u64 = 31;
    pub const END: u64 = 32;
    /// A variant index past the receiver's variant names, or calls
    /// postcard never makes (`any`, `identifier`, `ignored_any`).
    pub const OTHER: u64 = 33;
}

#[inline]
const fn mix(h: u64, x: u64) -> u64 {
    let h = (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

const fn mix_str(mut h: u64, s: &str) -> u64 {
    let b = s.as_bytes();
    h = mix(h, b.len() as u64);
    let mut i = 0;
    while i < b.len() {
        let mut word = 0u64;
        let mut j = 0;
        while j < 8 && i + j < b.len() {
            word |= (b[i + j] as u64) << (8 * j);
            j += 1;
        }
        h = mix(h, word);
        i += 8;
    }
    h
}

/// The fingerprint of one string (`str`/`String`) value, whatever its text.
pub(crate) const STR_FINGERPRINT: u64 = mix(SEED, kind::STR);
/// The fingerprint of one `bytes` value (`ByteBuf`, `Bytes`).
pub(crate) const BYTES_FINGERPRINT: u64 = mix(SEED, kind::BYTES);

/// The fingerprint of a sequence of `u8` (`Vec<u8>`, `[u8]`), empty or not.
pub(crate) const fn u8_seq_fingerprint(empty: bool) -> u64 {
    let h = mix(SEED, kind::SEQ);
    let h = if empty {
        h
    } else {
        mix(h, mix(SEED, kind::U8))
    };
    mix(h, kind::END)
}

impl Fingerprint {
    /// A fresh hash.
    pub(crate) fn new() -> Self {
        Fingerprint(Cell::new(SEED))
    }

    /// The hash of the events so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.get()
    }

    #[inline]
    fn add(&self, x: u64) {
        self.0.set(mix(self.0.get(), x));
    }

    #[inline]
    fn add2(&self, x: u64, name: &str) {
        self.0.set(mix_str(mix(self.0.get(), x), name));
    }

    /// Starts one element's own hash; returns the enclosing one.
    #[inline]
    fn open(&self) -> u64 {
        self.0.replace(SEED)
    }

    /// Ends an element begun with [`open`](Self::open): the enclosing hash
    /// takes the element's, unless it equals the previous element's.
    #[inline]
    fn close(&self, outer: u64, last: &mut Option<u64>) {
        let sub = self.0.replace(outer);
        if *last != Some(sub) {
            *last = Some(sub);
            self.add(sub);
        }
    }
}

/// What `encode::Serializer` and `decode::Deserializer` report the calls
/// of both ends to.
impl crate::decode::Shape for Fingerprint {
    #[inline]
    fn add(&self, x: u64) {
        Fingerprint::add(self, x);
    }

    #[inline]
    fn add_named(&self, x: u64, name: &str) {
        self.add2(x, name);
    }

    #[inline]
    fn name(&self, name: &str) {
        self.0.set(mix_str(self.0.get(), name));
    }

    #[inline]
    fn open(&self) -> u64 {
        Fingerprint::open(self)
    }

    #[inline]
    fn close(&self, outer: u64, last: &mut Option<u64>) {
        Fingerprint::close(self, outer, last);
    }

    #[inline]
    fn reset(&self, outer: u64) {
        self.0.set(outer);
    }
}

/// The fingerprint of `value` alone, without encoding it.
pub(crate) fn fingerprint<T: Serialize + ?Sized>(value: &T) -> Result<u64, EncodeError> {
    let record = Record::new(Fingerprint::new());
    let mut sink = postcard::Serializer { output: Discard(0) };
    value
        .serialize(encode::Serializer::new(&mut sink, &record))
        .map_err(|e| record.fail(e))?;
    Ok(record.shape().get())
}

/// A postcard flavour that keeps nothing.
struct Discard(usize);

impl postcard::ser_flavors::Flavor for Discard {
    type Output = usize;

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}
