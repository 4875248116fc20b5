//! Serialisation that keeps a `Serialize` impl's own error text.
//!
//! A `Serialize` impl refuses with `S::Error::custom("why")`; postcard's
//! error type keeps only its kind (`SerdeSerCustom`, "Serde Serialization
//! Error") and drops the text. [`Ser`] wraps the real serializer with an
//! error type of its own whose `custom` keeps the text, and wraps every
//! value it hands on ([`Value`]) so nested impls see the wrapper too. Where
//! a wrapped value's error must become the inner serializer's error type
//! again, its text goes into the encode's [`Slot`], and comes out as the
//! wrapper's error again one level up: an impl up the tree sees the text
//! (and may add context to it with `custom`, the outermost text wins),
//! and the encode's caller gets it at the top.
//!
//! The slot lives on the caller's stack, so nothing is shared between
//! threads or encodes. The wrapper costs a little on every value, so an
//! encode is plain postcard first, and only a failed one runs the value
//! through the wrapper (into a sink) to learn the text: a `Serialize` impl
//! refuses the same way twice. If the second run does not refuse (an impl
//! whose refusal is not repeatable), postcard's own error is reported.

use std::cell::Cell;
use std::fmt::{self, Display};

use serde::ser::{self, Error as _, Serialize, Serializer};

use super::EncodeError;

/// Serialises `value` as postcard into a new vector; a failure keeps the
/// refusing impl's text.
///
/// This is `postcard::to_stdvec` for values whose errors reach a user:
/// a launch's, a pool task's or an initializer's arguments.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_stdvec(value).map_err(|e| refusal(value, e))
}

/// The error for `value`, which postcard refused with `e`: serialises it
/// again through the wrapper, into a sink, to learn the refusal's text.
#[cold]
pub(crate) fn refusal<T: Serialize + ?Sized>(value: &T, e: postcard::Error) -> EncodeError {
    let slot = Slot::default();
    let _ = postcard::to_io(&Value { value, slot: &slot }, std::io::sink());
    slot.error(e)
}

/// `value` through the wrapper alone (tests: it must write what postcard
/// writes).
#[cfg(test)]
pub(super) fn wrapped_to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let slot = Slot::default();
    postcard::to_stdvec(&Value { value, slot: &slot }).map_err(|e| slot.error(e))
}

/// The text of the outermost custom error of one encode.
#[derive(Default)]
struct Slot(Cell<Option<String>>);

impl Slot {
    /// The encode error for postcard's `e`: the custom text when an impl
    /// gave one, else postcard's own error.
    fn error(&self, e: postcard::Error) -> EncodeError {
        match self.0.take() {
            Some(text) => EncodeError::custom(text),
            None => EncodeError::format(e),
        }
    }

    /// The wrapper's error for the inner serializer's `e`: the custom
    /// text a wrapped value stored (so an impl up the tree that adds
    /// context to it sees the text), else `e` itself.
    fn lift<E>(&self, e: E) -> Fail<E> {
        match self.0.take() {
            Some(text) => Fail::Custom(text),
            None => Fail::Inner(e),
        }
    }
}

/// A value to serialise through [`Ser`].
struct Value<'a, T: ?Sized> {
    value: &'a T,
    slot: &'a Slot,
}

impl<T: Serialize + ?Sized> Serialize for Value<'_, T> {
    fn serialize<S: Serializer>(&self, inner: S) -> Result<S::Ok, S::Error> {
        let ser = Ser {
            inner,
            slot: self.slot,
        };
        self.value.serialize(ser).map_err(|e| match e {
            Fail::Inner(e) => e,
            Fail::Custom(text) => {
                let e = S::Error::custom(&text);
                self.slot.0.set(Some(text));
                e
            }
        })
    }
}

/// The wrapper's error: the inner serializer's, or a custom text.
#[derive(Debug)]
enum Fail<E> {
    Inner(E),
    Custom(String),
}

impl<E: Display> Display for Fail<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Inner(e) => e.fmt(f),
            Fail::Custom(text) => f.write_str(text),
        }
    }
}

impl<E: std::error::Error> std::error::Error for Fail<E> {}

impl<E: ser::Error> ser::Error for Fail<E> {
    fn custom<T: Display>(msg: T) -> Self {
        Fail::Custom(msg.to_string())
    }
}

/// A serializer that hands everything to `inner`, wrapping the values.
struct Ser<'a, S> {
    inner: S,
    slot: &'a Slot,
}

/// A compound serializer (sequence, map, struct, ...) of [`Ser`].
struct Compound<'a, C> {
    inner: C,
    slot: &'a Slot,
}

impl<'a, S> Ser<'a, S> {
    fn wrap<'v, T: ?Sized>(&self, value: &'v T) -> Value<'v, T>
    where
        'a: 'v,
    {
        Value {
            value,
            slot: self.slot,
        }
    }
}

/// The wrapper of the compound serializer `inner` started.
fn compound<C, E>(slot: &Slot, inner: Result<C, E>) -> Result<Compound<'_, C>, Fail<E>> {
    inner
        .map(|inner| Compound { inner, slot })
        .map_err(Fail::Inner)
}

impl<'a, C> Compound<'a, C> {
    fn wrap<'v, T: ?Sized>(&self, value: &'v T) -> Value<'v, T>
    where
        'a: 'v,
    {
        Value {
            value,
            slot: self.slot,
        }
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<S::Ok, Self::Error> {
            self.inner.$method($($arg),*).map_err(Fail::Inner)
        }
    )*};
}

impl<'a, S: Serializer> Serializer for Ser<'a, S> {
    type Ok = S::Ok;
    type Error = Fail<S::Error>;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, Self::Error> {
        let (value, slot) = (self.wrap(value), self.slot);
        self.inner.serialize_some(&value).map_err(|e| slot.lift(e))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, Self::Error> {
        let (value, slot) = (self.wrap(value), self.slot);
        self.inner
            .serialize_newtype_struct(name, &value)
            .map_err(|e| slot.lift(e))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, Self::Error> {
        let (value, slot) = (self.wrap(value), self.slot);
        self.inner
            .serialize_newtype_variant(name, index, variant, &value)
            .map_err(|e| slot.lift(e))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        compound(self.slot, self.inner.serialize_seq(len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        compound(self.slot, self.inner.serialize_tuple(len))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        compound(self.slot, self.inner.serialize_tuple_struct(name, len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        compound(
            self.slot,
            self.inner
                .serialize_tuple_variant(name, index, variant, len),
        )
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        compound(self.slot, self.inner.serialize_map(len))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        compound(self.slot, self.inner.serialize_struct(name, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        compound(
            self.slot,
            self.inner
                .serialize_struct_variant(name, index, variant, len),
        )
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, Self::Error> {
        self.inner.collect_str(value).map_err(Fail::Inner)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_element(&value)
            .map_err(|e| self.slot.lift(e))
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_element(&value)
            .map_err(|e| self.slot.lift(e))
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_field(&value)
            .map_err(|e| self.slot.lift(e))
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_field(&value)
            .map_err(|e| self.slot.lift(e))
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        let key = self.wrap(key);
        self.inner
            .serialize_key(&key)
            .map_err(|e| self.slot.lift(e))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_value(&value)
            .map_err(|e| self.slot.lift(e))
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), Self::Error> {
        let (key, value) = (self.wrap(key), self.wrap(value));
        self.inner
            .serialize_entry(&key, &value)
            .map_err(|e| self.slot.lift(e))
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_field(key, &value)
            .map_err(|e| self.slot.lift(e))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.inner.skip_field(key).map_err(Fail::Inner)
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Fail<C::Error>;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_field(key, &value)
            .map_err(|e| self.slot.lift(e))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.inner.skip_field(key).map_err(Fail::Inner)
    }

    fn end(self) -> Result<C::Ok, Self::Error> {
        self.inner.end().map_err(Fail::Inner)
    }
}
