//! The one wrapper an encode of a user's value goes through when it must
//! keep a refusal's text or record the value's shape: the sender's half
//! of [`crate::decode`].
//!
//! **Error text.** A `Serialize` impl refuses with
//! `S::Error::custom("why")`; postcard's error type keeps only its kind
//! (`SerdeSerCustom`, "Serde Serialization Error") and drops the text.
//! [`Serializer`] wraps the real serializer with the error type
//! [`Fail`], whose `custom` keeps the text, and wraps every value it hands
//! on ([`Value`]) so nested impls see the wrapper too. Where a wrapped
//! value's error must become the inner serializer's error type again, its
//! text goes into the encode's [`Slot`] and comes out as the wrapper's
//! error again one level up: an impl up the tree sees the text (and may
//! add context to it with `custom`, the outermost text wins), and the
//! encode's caller gets it at the top ([`Record::error`]).
//!
//! **Shape.** The same wrapper reports every serde call to the record's
//! [`Shape`]: a typed message's fingerprint (`tag/shape.rs` says what is
//! hashed), or nothing (`()`, for `error::to_vec`'s text capture).
//!
//! The record lives on the caller's stack, so nothing is shared between
//! threads or encodes.

use std::fmt::Display;

use serde::ser::{self, Error as _, Serialize};

use crate::decode::{Fail, Shape, Slot};
use crate::tag::shape::kind;
use crate::EncodeError;

/// What one encode keeps: the text of its outermost custom error, and
/// the calls it made, in `H`.
pub(crate) struct Record<H = ()> {
    text: Slot,
    shape: H,
}

impl<H> Record<H> {
    /// A record of the calls in `shape`.
    pub(crate) fn new(shape: H) -> Self {
        Record {
            text: Slot::default(),
            shape,
        }
    }

    /// What the encode recorded.
    pub(crate) fn shape(&self) -> &H {
        &self.shape
    }

    /// The encode error for the inner format's `e`: the custom text when
    /// an impl gave one, else postcard's own error.
    pub(crate) fn error(&self, e: postcard::Error) -> EncodeError {
        match self.text.take() {
            Some((text, _)) => EncodeError::custom(text),
            None => EncodeError::format(e),
        }
    }

    /// The encode error for the wrapper's `e`.
    pub(crate) fn fail(&self, e: Fail<postcard::Error>) -> EncodeError {
        match e.into_text() {
            Ok(text) => EncodeError::custom(text),
            Err(e) => self.error(e),
        }
    }
}

impl<E: ser::Error> ser::Error for Fail<E> {
    fn custom<T: Display>(msg: T) -> Self {
        Fail::custom_text(msg.to_string())
    }
}

/// A value to serialise through a [`Serializer`].
pub(crate) struct Value<'a, H, T: ?Sized> {
    value: &'a T,
    record: &'a Record<H>,
}

impl<'a, H, T: ?Sized> Value<'a, H, T> {
    /// `value`, recorded in `record`.
    pub(crate) fn new(value: &'a T, record: &'a Record<H>) -> Self {
        Value { value, record }
    }
}

impl<H: Shape, T: Serialize + ?Sized> Serialize for Value<'_, H, T> {
    #[inline]
    fn serialize<S: ser::Serializer>(&self, inner: S) -> Result<S::Ok, S::Error> {
        let record = self.record;
        self.value
            .serialize(Serializer { inner, record })
            .map_err(|e| record.text.lower(e, |text| S::Error::custom(text)))
    }
}

/// A serializer that hands everything to `inner`, wrapping the values and
/// recording the calls.
pub(crate) struct Serializer<'a, H, S> {
    inner: S,
    record: &'a Record<H>,
}

impl<'a, H, S> Serializer<'a, H, S> {
    /// Wraps `inner`, recording in `record`.
    pub(crate) fn new(inner: S, record: &'a Record<H>) -> Self {
        Serializer { inner, record }
    }
}

/// A compound being serialised: elements inline (`last: None` throughout)
/// or each recorded alone with runs counted once (seq, map).
pub(crate) struct Compound<'a, H, C> {
    inner: C,
    record: &'a Record<H>,
    last: Option<u64>,
    outer: u64,
}

impl<'a, H: Shape, C> Compound<'a, H, C> {
    #[inline]
    fn value<'v, T: ?Sized>(&self, value: &'v T) -> Value<'v, H, T>
    where
        'a: 'v,
    {
        Value::new(value, self.record)
    }

    #[inline]
    fn shape(&self) -> &'a H {
        &self.record.shape
    }
}

/// The wrapper of the compound serializer `inner` started.
#[inline]
fn compound<H, C, E>(
    record: &Record<H>,
    inner: Result<C, E>,
) -> Result<Compound<'_, H, C>, Fail<E>> {
    match inner {
        Ok(inner) => Ok(Compound {
            inner,
            record,
            last: None,
            outer: 0,
        }),
        Err(e) => Err(Fail::Inner(e)),
    }
}

macro_rules! scalars {
    ($($method:ident: $ty:ty => $kind:expr),* $(,)?) => {$(
        #[inline]
        fn $method(self, v: $ty) -> Result<S::Ok, Self::Error> {
            self.record.shape.add($kind);
            self.inner.$method(v).map_err(Fail::Inner)
        }
    )*};
}

impl<'a, H: Shape, S: ser::Serializer> ser::Serializer for Serializer<'a, H, S> {
    type Ok = S::Ok;
    type Error = Fail<S::Error>;
    type SerializeSeq = Compound<'a, H, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, H, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, H, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, H, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, H, S::SerializeMap>;
    type SerializeStruct = Compound<'a, H, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, H, S::SerializeStructVariant>;

    scalars! {
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

    fn serialize_none(self) -> Result<S::Ok, Self::Error> {
        self.record.shape.add(kind::NONE);
        self.inner.serialize_none().map_err(Fail::Inner)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, Self::Error> {
        let record = self.record;
        record.shape.add(kind::SOME);
        self.inner
            .serialize_some(&Value::new(value, record))
            .map_err(|e| record.text.lift(e))
    }

    fn serialize_unit(self) -> Result<S::Ok, Self::Error> {
        self.record.shape.add(kind::UNIT);
        self.inner.serialize_unit().map_err(Fail::Inner)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, Self::Error> {
        self.record.shape.add_named(kind::UNIT_STRUCT, name);
        self.inner.serialize_unit_struct(name).map_err(Fail::Inner)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, Self::Error> {
        let shape = &self.record.shape;
        shape.add_named(kind::ENUM, name);
        shape.add_named(u64::from(index), variant);
        shape.add(kind::UNIT_VARIANT);
        self.inner
            .serialize_unit_variant(name, index, variant)
            .map_err(Fail::Inner)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, Self::Error> {
        let record = self.record;
        record.shape.add_named(kind::NEWTYPE_STRUCT, name);
        self.inner
            .serialize_newtype_struct(name, &Value::new(value, record))
            .map_err(|e| record.text.lift(e))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, Self::Error> {
        let record = self.record;
        record.shape.add_named(kind::ENUM, name);
        record.shape.add_named(u64::from(index), variant);
        record.shape.add(kind::NEWTYPE_VARIANT);
        self.inner
            .serialize_newtype_variant(name, index, variant, &Value::new(value, record))
            .map_err(|e| record.text.lift(e))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        self.record.shape.add(kind::SEQ);
        compound(self.record, self.inner.serialize_seq(len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        self.record.shape.add(kind::TUPLE);
        self.record.shape.add(len as u64);
        compound(self.record, self.inner.serialize_tuple(len))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        self.record.shape.add_named(kind::TUPLE_STRUCT, name);
        self.record.shape.add(len as u64);
        compound(self.record, self.inner.serialize_tuple_struct(name, len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        let shape = &self.record.shape;
        shape.add_named(kind::ENUM, name);
        shape.add_named(u64::from(index), variant);
        shape.add(kind::TUPLE_VARIANT);
        shape.add(len as u64);
        compound(
            self.record,
            self.inner
                .serialize_tuple_variant(name, index, variant, len),
        )
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        self.record.shape.add(kind::MAP);
        compound(self.record, self.inner.serialize_map(len))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        self.record.shape.add_named(kind::STRUCT, name);
        compound(self.record, self.inner.serialize_struct(name, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        let shape = &self.record.shape;
        shape.add_named(kind::ENUM, name);
        shape.add_named(u64::from(index), variant);
        shape.add(kind::STRUCT_VARIANT);
        compound(
            self.record,
            self.inner
                .serialize_struct_variant(name, index, variant, len),
        )
    }

    /// A string made from `value`: recorded as one, written by the inner
    /// serializer's own `collect_str` (the same bytes as `serialize_str`).
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, Self::Error> {
        self.record.shape.add(kind::STR);
        self.inner.collect_str(value).map_err(Fail::Inner)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<H: Shape, C: ser::SerializeSeq> ser::SerializeSeq for Compound<'_, H, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let shape = self.shape();
        let outer = shape.open();
        match self.inner.serialize_element(&self.value(value)) {
            Ok(()) => {
                shape.close(outer, &mut self.last);
                Ok(())
            }
            Err(e) => {
                // An element that failed leaves no trace in the record: an
                // impl that swallows the error and goes on sends what the
                // receiver will read.
                shape.reset(outer);
                Err(self.record.text.lift(e))
            }
        }
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.shape().add(kind::END);
        self.inner.end().map_err(Fail::Inner)
    }
}

/// The compounds whose elements are recorded inline, then `END`.
macro_rules! inline_compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl<H: Shape, C: ser::$trait> ser::$trait for Compound<'_, H, C> {
            type Ok = C::Ok;
            type Error = Fail<C::Error>;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
                self.inner
                    .$method(&self.value(value))
                    .map_err(|e| self.record.text.lift(e))
            }

            fn end(self) -> Result<C::Ok, Self::Error> {
                self.shape().add(kind::END);
                self.inner.end().map_err(Fail::Inner)
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
        impl<H: Shape, C: ser::$trait> ser::$trait for Compound<'_, H, C> {
            type Ok = C::Ok;
            type Error = Fail<C::Error>;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Self::Error> {
                self.shape().name(key);
                self.inner
                    .serialize_field(key, &self.value(value))
                    .map_err(|e| self.record.text.lift(e))
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
                self.inner.skip_field(key).map_err(Fail::Inner)
            }

            fn end(self) -> Result<C::Ok, Self::Error> {
                self.shape().add(kind::END);
                self.inner.end().map_err(Fail::Inner)
            }
        }
    )*};
}

named_compound! { SerializeStruct, SerializeStructVariant }

impl<H: Shape, C: ser::SerializeMap> ser::SerializeMap for Compound<'_, H, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.outer = self.shape().open();
        self.inner
            .serialize_key(&self.value(key))
            .map_err(|e| self.record.text.lift(e))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.inner
            .serialize_value(&self.value(value))
            .map_err(|e| self.record.text.lift(e))?;
        self.shape().close(self.outer, &mut self.last);
        Ok(())
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.shape().add(kind::END);
        self.inner.end().map_err(Fail::Inner)
    }
}
