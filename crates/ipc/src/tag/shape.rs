//! The shape fingerprint of a typed message: a hash of the serde data
//! model calls that encode (on the sender) and decode (on the receiver)
//! the value.
//!
//! serde documents its data model and `derive` generates both sides of it
//! from the type's source, so the two ends of a message make matching
//! calls exactly when they agree on the value's structure: the same
//! primitive kinds, the same struct, enum and variant names, the same field
//! names. [`Serializer`] wraps postcard's serializer and hashes every call
//! it forwards; on the receiver, the decoder's one wrapper
//! (`crate::decode::Deserializer`, which also counts nesting) reports the
//! calls the receiver's `Deserialize` makes to a [`Fingerprint`], which
//! hashes them in the same canonical form:
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

use serde::ser::{self, Serialize};

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

/// The receiver's side: `decode::Deserializer` reports the calls the
/// receiver's `Deserialize` makes here.
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

// ---------------------------------------------------------------- sender

/// A serializer that hashes the calls it forwards to `S`.
pub(crate) struct Serializer<'h, S> {
    inner: S,
    fp: &'h Fingerprint,
}

impl<'h, S> Serializer<'h, S> {
    /// Wraps `inner`, hashing into `fp`.
    pub(crate) fn new(inner: S, fp: &'h Fingerprint) -> Self {
        Serializer { inner, fp }
    }
}

/// A value to hand to an inner compound serializer: serialises through a
/// hashing [`Serializer`].
struct Val<'h, T: ?Sized> {
    value: &'h T,
    fp: &'h Fingerprint,
}

impl<T: Serialize + ?Sized> Serialize for Val<'_, T> {
    #[inline]
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Serializer::new(s, self.fp))
    }
}

/// A compound being serialised: elements inline (`last: None` throughout)
/// or each hashed alone with runs counted once (seq, map).
pub(crate) struct Compound<'h, C> {
    inner: C,
    fp: &'h Fingerprint,
    last: Option<u64>,
    outer: u64,
}

macro_rules! ser_scalars {
    ($($method:ident: $ty:ty => $kind:expr),* $(,)?) => {$(
        #[inline]
        fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.fp.add($kind);
            self.inner.$method(v)
        }
    )*};
}

impl<'h, S: ser::Serializer> ser::Serializer for Serializer<'h, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'h, S::SerializeSeq>;
    type SerializeTuple = Compound<'h, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'h, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'h, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'h, S::SerializeMap>;
    type SerializeStruct = Compound<'h, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'h, S::SerializeStructVariant>;

    ser_scalars! {
        serialize_bool: bool => kind::BOOL,
        serialize_i8: i8 => kind::I8,
        serialize_i16: i16 => kind::I16,
        serialize_i32: i32 => kind::I32,
        serialize_i64: i64 => kind::I64,
        serialize_i128: i128 => kind::I128,
        serialize_u8: u8 => kind::U8,
        serialize_u16: u16 => kind::U16,
        serialize_u32: u32 => kind::U32,
        serialize_u64: u64 => kind::U64,
        serialize_u128: u128 => kind::U128,
        serialize_f32: f32 => kind::F32,
        serialize_f64: f64 => kind::F64,
        serialize_char: char => kind::CHAR,
        serialize_str: &str => kind::STR,
        serialize_bytes: &[u8] => kind::BYTES,
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.fp.add(kind::NONE);
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.fp.add(kind::SOME);
        self.inner.serialize_some(&Val { value, fp: self.fp })
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.fp.add(kind::UNIT);
        self.inner.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.fp.add2(kind::UNIT_STRUCT, name);
        self.inner.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.fp.add2(kind::ENUM, name);
        self.fp.add2(u64::from(index), variant);
        self.fp.add(kind::UNIT_VARIANT);
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.fp.add2(kind::NEWTYPE_STRUCT, name);
        self.inner
            .serialize_newtype_struct(name, &Val { value, fp: self.fp })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.fp.add2(kind::ENUM, name);
        self.fp.add2(u64::from(index), variant);
        self.fp.add(kind::NEWTYPE_VARIANT);
        self.inner
            .serialize_newtype_variant(name, index, variant, &Val { value, fp: self.fp })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.fp.add(kind::SEQ);
        let inner = self.inner.serialize_seq(len)?;
        Ok(compound(inner, self.fp))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.fp.add(kind::TUPLE);
        self.fp.add(len as u64);
        let inner = self.inner.serialize_tuple(len)?;
        Ok(compound(inner, self.fp))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.fp.add2(kind::TUPLE_STRUCT, name);
        self.fp.add(len as u64);
        let inner = self.inner.serialize_tuple_struct(name, len)?;
        Ok(compound(inner, self.fp))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.fp.add2(kind::ENUM, name);
        self.fp.add2(u64::from(index), variant);
        self.fp.add(kind::TUPLE_VARIANT);
        self.fp.add(len as u64);
        let inner = self
            .inner
            .serialize_tuple_variant(name, index, variant, len)?;
        Ok(compound(inner, self.fp))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.fp.add(kind::MAP);
        let inner = self.inner.serialize_map(len)?;
        Ok(compound(inner, self.fp))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.fp.add2(kind::STRUCT, name);
        let inner = self.inner.serialize_struct(name, len)?;
        Ok(compound(inner, self.fp))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.fp.add2(kind::ENUM, name);
        self.fp.add2(u64::from(index), variant);
        self.fp.add(kind::STRUCT_VARIANT);
        let inner = self
            .inner
            .serialize_struct_variant(name, index, variant, len)?;
        Ok(compound(inner, self.fp))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

fn compound<C>(inner: C, fp: &Fingerprint) -> Compound<'_, C> {
    Compound {
        inner,
        fp,
        last: None,
        outer: SEED,
    }
}

impl<S: ser::SerializeSeq> ser::SerializeSeq for Compound<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let outer = self.fp.open();
        match self.inner.serialize_element(&Val { value, fp: self.fp }) {
            Ok(()) => {
                self.fp.close(outer, &mut self.last);
                Ok(())
            }
            Err(e) => {
                // An element that failed leaves no trace in the hash: an
                // impl that swallows the error and goes on sends what the
                // receiver will read.
                self.fp.0.set(outer);
                Err(e)
            }
        }
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.fp.add(kind::END);
        self.inner.end()
    }
}

/// The compounds whose elements are hashed inline, then `END`.
macro_rules! inline_compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl<S: ser::$trait> ser::$trait for Compound<'_, S> {
            type Ok = S::Ok;
            type Error = S::Error;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
                self.inner.$method(&Val { value, fp: self.fp })
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.fp.add(kind::END);
                self.inner.end()
            }
        }
    )*};
}

inline_compound! {
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
}

/// The compounds of named fields: each field's name, then its value.
macro_rules! named_compound {
    ($($trait:ident),*) => {$(
        impl<S: ser::$trait> ser::$trait for Compound<'_, S> {
            type Ok = S::Ok;
            type Error = S::Error;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), S::Error> {
                self.fp.0.set(mix_str(self.fp.get(), key));
                self.inner.serialize_field(key, &Val { value, fp: self.fp })
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.inner.skip_field(key)
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.fp.add(kind::END);
                self.inner.end()
            }
        }
    )*};
}

named_compound! { SerializeStruct, SerializeStructVariant }

impl<S: ser::SerializeMap> ser::SerializeMap for Compound<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.outer = self.fp.open();
        self.inner.serialize_key(&Val {
            value: key,
            fp: self.fp,
        })
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.inner.serialize_value(&Val { value, fp: self.fp })?;
        self.fp.close(self.outer, &mut self.last);
        Ok(())
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.fp.add(kind::END);
        self.inner.end()
    }
}

/// The fingerprint of `value` alone, without encoding it.
pub(crate) fn fingerprint<T: Serialize + ?Sized>(value: &T) -> Result<u64, postcard::Error> {
    let fp = Fingerprint::new();
    let mut sink = postcard::Serializer { output: Discard(0) };
    value.serialize(Serializer::new(&mut sink, &fp))?;
    Ok(fp.get())
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
