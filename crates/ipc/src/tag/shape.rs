//! The shape fingerprint of a typed message: a hash of the serde data
//! model calls that encode (on the sender) and decode (on the receiver)
//! the value.
//!
//! serde documents its data model and `derive` generates both sides of it
//! from the type's source, so the two ends of a message make matching
//! calls exactly when they agree on the value's structure: the same
//! primitive kinds, the same struct, enum and variant names, the same field
//! names. [`Serializer`] wraps postcard's serializer and hashes every call
//! it forwards; [`Deserializer`] wraps postcard's deserializer (and every
//! visitor, access and seed handed back through it, the way
//! `serde_ignored` and `serde_stacker` do) and hashes the calls the
//! receiver's `Deserialize` makes, in the same canonical form:
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
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::{self, Serialize};

/// The running hash of one message's events.
pub(crate) struct Fingerprint(Cell<u64>);

/// Where every hash (and every element's own hash) starts.
const SEED: u64 = 0x6d70_726f_6373_6870; // "mprocshp"

/// The event kinds.
mod kind {
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

// -------------------------------------------------------------- receiver

/// How a wrapped visitor hashes what the inner deserializer hands it.
#[derive(Clone, Copy)]
enum Mode {
    /// Nothing of its own (the call was hashed when it was made); `none`
    /// and `some` add their events.
    Plain,
    /// The elements of a `seq`: each alone, runs counted once.
    Seq,
    /// The elements of a tuple, inline.
    Inline,
    /// The fields of a struct (or struct variant), named by the receiver.
    Fields(&'static [&'static str]),
    /// An enum's variants: the variant index read names one.
    Enum(&'static [&'static str]),
}

/// A deserializer that hashes the calls made of it, forwarding them to `D`.
pub(crate) struct Deserializer<'h, D> {
    inner: D,
    fp: &'h Fingerprint,
}

impl<'h, D> Deserializer<'h, D> {
    /// Wraps `inner`, hashing into `fp`.
    pub(crate) fn new(inner: D, fp: &'h Fingerprint) -> Self {
        Deserializer { inner, fp }
    }
}

/// A visitor, access or seed, wrapped.
struct Wrap<'h, T> {
    inner: T,
    fp: &'h Fingerprint,
    mode: Mode,
    /// Seq and map: the previous element's hash. Fields: the next index.
    last: Option<u64>,
    index: usize,
    outer: u64,
}

#[inline]
fn wrap<T>(inner: T, fp: &Fingerprint, mode: Mode) -> Wrap<'_, T> {
    Wrap {
        inner,
        fp,
        mode,
        last: None,
        index: 0,
        outer: SEED,
    }
}

/// Scalars: the call is the whole event. Their visitor is handed on as it
/// is (postcard answers a scalar request with that scalar, nothing the
/// hash would have to see), which keeps a sequence of numbers cheap.
macro_rules! de_scalars {
    ($($method:ident => $kind:expr),* $(,)?) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.fp.add($kind);
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Deserializer<'_, D> {
    type Error = D::Error;

    de_scalars! {
        deserialize_bool => kind::BOOL,
        deserialize_i8 => kind::I8,
        deserialize_i16 => kind::I16,
        deserialize_i32 => kind::I32,
        deserialize_i64 => kind::I64,
        deserialize_i128 => kind::I128,
        deserialize_u8 => kind::U8,
        deserialize_u16 => kind::U16,
        deserialize_u32 => kind::U32,
        deserialize_u64 => kind::U64,
        deserialize_u128 => kind::U128,
        deserialize_f32 => kind::F32,
        deserialize_f64 => kind::F64,
        deserialize_char => kind::CHAR,
        deserialize_str => kind::STR,
        deserialize_string => kind::STR,
        deserialize_bytes => kind::BYTES,
        deserialize_byte_buf => kind::BYTES,
        deserialize_unit => kind::UNIT,
        deserialize_any => kind::OTHER,
        deserialize_identifier => kind::OTHER,
        deserialize_ignored_any => kind::OTHER,
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_option(wrap(visitor, self.fp, Mode::Plain))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fp.add2(kind::UNIT_STRUCT, name);
        self.inner
            .deserialize_unit_struct(name, wrap(visitor, self.fp, Mode::Plain))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fp.add2(kind::NEWTYPE_STRUCT, name);
        self.inner
            .deserialize_newtype_struct(name, wrap(visitor, self.fp, Mode::Plain))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.fp.add(kind::SEQ);
        let v = self
            .inner
            .deserialize_seq(wrap(visitor, self.fp, Mode::Seq))?;
        self.fp.add(kind::END);
        Ok(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fp.add(kind::TUPLE);
        self.fp.add(len as u64);
        let v = self
            .inner
            .deserialize_tuple(len, wrap(visitor, self.fp, Mode::Inline))?;
        self.fp.add(kind::END);
        Ok(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fp.add2(kind::TUPLE_STRUCT, name);
        self.fp.add(len as u64);
        let v =
            self.inner
                .deserialize_tuple_struct(name, len, wrap(visitor, self.fp, Mode::Inline))?;
        self.fp.add(kind::END);
        Ok(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.fp.add(kind::MAP);
        let v = self
            .inner
            .deserialize_map(wrap(visitor, self.fp, Mode::Seq))?;
        self.fp.add(kind::END);
        Ok(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fp.add2(kind::STRUCT, name);
        let v = self.inner.deserialize_struct(
            name,
            fields,
            wrap(visitor, self.fp, Mode::Fields(fields)),
        )?;
        self.fp.add(kind::END);
        Ok(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fp.add2(kind::ENUM, name);
        self.inner
            .deserialize_enum(name, variants, wrap(visitor, self.fp, Mode::Enum(variants)))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! visit_values {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit_values! {
        visit_bool: bool,
        visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64, visit_i128: i128,
        visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64, visit_u128: u128,
        visit_f32: f32, visit_f64: f64, visit_char: char,
        visit_str: &str, visit_borrowed_str: &'de str, visit_string: String,
        visit_bytes: &[u8], visit_borrowed_bytes: &'de [u8], visit_byte_buf: Vec<u8>,
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.fp.add(kind::NONE);
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.fp.add(kind::SOME);
        self.inner.visit_some(Deserializer::new(d, self.fp))
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(Deserializer::new(d, self.fp))
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(wrap(seq, self.fp, self.mode))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(wrap(map, self.fp, self.mode))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(wrap(data, self.fp, self.mode))
    }
}

/// A seed whose value deserializes through a hashing [`Deserializer`],
/// after hashing `name` (a field's) if any.
struct Seed<'h, S> {
    inner: S,
    fp: &'h Fingerprint,
    name: Option<&'static str>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        if let Some(name) = self.name {
            self.fp.0.set(mix_str(self.fp.get(), name));
        }
        self.inner.deserialize(Deserializer::new(d, self.fp))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        match self.mode {
            Mode::Seq => {
                let outer = self.fp.open();
                let seed = Seed {
                    inner: seed,
                    fp: self.fp,
                    name: None,
                };
                match self.inner.next_element_seed(seed)? {
                    Some(v) => {
                        self.fp.close(outer, &mut self.last);
                        Ok(Some(v))
                    }
                    None => {
                        self.fp.0.set(outer);
                        Ok(None)
                    }
                }
            }
            Mode::Fields(fields) => {
                // A field past the receiver's names (never, for derived
                // types) hashes as an unnamed one.
                let name = Some(fields.get(self.index).copied().unwrap_or("\u{0}"));
                self.index += 1;
                self.inner.next_element_seed(Seed {
                    inner: seed,
                    fp: self.fp,
                    name,
                })
            }
            _ => self.inner.next_element_seed(Seed {
                inner: seed,
                fp: self.fp,
                name: None,
            }),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let outer = self.fp.open();
        let key = self.inner.next_key_seed(Seed {
            inner: seed,
            fp: self.fp,
            name: None,
        })?;
        if key.is_none() {
            self.fp.0.set(outer);
        }
        self.outer = outer;
        Ok(key)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let v = self.inner.next_value_seed(Seed {
            inner: seed,
            fp: self.fp,
            name: None,
        })?;
        self.fp.close(self.outer, &mut self.last);
        Ok(v)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'h, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<'h, A> {
    type Error = A::Error;
    type Variant = Wrap<'h, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let variants = match self.mode {
            Mode::Enum(variants) => variants,
            _ => &[],
        };
        let fp = self.fp;
        let (value, variant) = self.inner.variant_seed(VariantSeed {
            inner: seed,
            fp,
            variants,
        })?;
        Ok((value, wrap(variant, fp, Mode::Plain)))
    }
}

/// The seed of an enum's variant identifier: hashes the index it reads
/// and the receiver's name for it.
struct VariantSeed<'h, S> {
    inner: S,
    fp: &'h Fingerprint,
    variants: &'static [&'static str],
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for VariantSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(VariantDe {
            inner: d,
            fp: self.fp,
            variants: self.variants,
        })
    }
}

/// The deserializer of a variant identifier: every visitor it hands on
/// hashes the index it is given.
struct VariantDe<'h, D> {
    inner: D,
    fp: &'h Fingerprint,
    variants: &'static [&'static str],
}

/// The visitor of a variant identifier.
struct VariantVisitor<'h, V> {
    inner: V,
    fp: &'h Fingerprint,
    variants: &'static [&'static str],
}

impl<V> VariantVisitor<'_, V> {
    fn index(&self, index: u64) {
        let name = usize::try_from(index)
            .ok()
            .and_then(|i| self.variants.get(i));
        match name {
            Some(name) => self.fp.add2(index, name),
            None => self.fp.add(kind::OTHER),
        }
    }
}

macro_rules! variant_index {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.index(u64::from(v));
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for VariantVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    variant_index! { visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64 }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.fp.add(kind::OTHER);
        self.inner.visit_str(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        self.fp.add(kind::OTHER);
        self.inner.visit_bytes(v)
    }
}

macro_rules! variant_de {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(VariantVisitor { inner: visitor, fp: self.fp, variants: self.variants })
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for VariantDe<'_, D> {
    type Error = D::Error;

    variant_de! {
        deserialize_any deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_any(visitor)
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.fp.add(kind::UNIT_VARIANT);
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.fp.add(kind::NEWTYPE_VARIANT);
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            fp: self.fp,
            name: None,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.fp.add(kind::TUPLE_VARIANT);
        self.fp.add(len as u64);
        let v = self
            .inner
            .tuple_variant(len, wrap(visitor, self.fp, Mode::Inline))?;
        self.fp.add(kind::END);
        Ok(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.fp.add(kind::STRUCT_VARIANT);
        let v = self
            .inner
            .struct_variant(fields, wrap(visitor, self.fp, Mode::Fields(fields)))?;
        self.fp.add(kind::END);
        Ok(v)
    }
}
