//! A nesting-depth limit for serde deserialisers.
//!
//! postcard recurses once per nesting level of the value it decodes and has
//! no limit of its own, so a type that nests without bound (`enum Tree {
//! Leaf, Node(Box<Tree>) }`) lets a hostile message of nesting tags overflow
//! the receiving thread's stack, which aborts the process. [`Deserializer`]
//! wraps another deserializer and counts nesting: every container it hands
//! on (option, newtype, sequence, tuple, map, struct, enum, tuple and
//! struct variant) is one level, and opening a container at the limit is an
//! error instead of a deeper recursion. Scalars (integers, strings, bytes,
//! unit, identifiers) are not levels: they cannot nest.
//!
//! The depth is carried by value through the wrappers of every visitor,
//! access and seed handed back to the inner deserializer (the shape of
//! `serde_stacker`'s adapter), so a level ends when its call returns, on
//! every path, error or not. Nothing is allocated; the wrappers inline away.
//! postcard drops a custom error's text ("Serde Deserialization Error"),
//! so the wrappers also keep it: their error type is [`Fail`], whose
//! `custom` keeps the text a `Deserialize` impl or visitor gives (its own
//! refusal, serde's "invalid length 1, expected ...", the limit's), and
//! where a wrapped call must hand the inner deserializer its own error type
//! the text waits in the [`Limit`] and comes back out one level up (the
//! encode side does the same: `error::capture`). The limit also records
//! that it was hit, for the caller to report.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// The nesting limit of typed messages: generous for real data (serde_json
/// uses the same), and a small fraction of a 2 MiB thread stack even in a
/// debug build (see `docs/reliability.md`).
pub(crate) const DEFAULT_LIMIT: usize = 128;

/// A depth limit, shared by every wrapper of one decode.
pub(crate) struct Limit {
    max: usize,
    hit: Cell<bool>,
    /// The text of a custom error on its way up to the caller.
    text: Cell<Option<Box<Text>>>,
}

impl Limit {
    /// A limit of `max` nested containers.
    pub(crate) const fn new(max: usize) -> Self {
        Limit {
            max,
            hit: Cell::new(false),
            text: Cell::new(None),
        }
    }

    /// The number of nested containers allowed.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Whether a decode through this limit tried to nest deeper.
    pub(crate) fn exceeded(&self) -> bool {
        self.hit.get()
    }

    /// The wrapper's error for the inner deserializer's `e`: the custom
    /// text a wrapped call left here, else `e` itself.
    #[inline]
    fn lift<E>(&self, e: E) -> Fail<E> {
        match self.text.take() {
            Some(text) => Fail::Custom(text),
            None => Fail::Inner(e),
        }
    }

    /// The inner deserializer's error for the wrapper's `e`, leaving a
    /// custom text here for [`lift`](Self::lift) one level up.
    #[inline]
    fn lower<E: de::Error>(&self, e: Fail<E>) -> E {
        match e {
            Fail::Inner(e) => e,
            Fail::Custom(text) => {
                let e = E::custom(&text.0);
                self.text.set(Some(text));
                e
            }
        }
    }

    /// The text of a decode's failure `e` through this limit: the custom
    /// text, else `None` (the inner error says it all).
    pub(crate) fn text_of<E>(&self, e: Fail<E>) -> Result<String, E> {
        self.refusal_of(e).map(|(text, _)| text)
    }

    /// As [`text_of`](Self::text_of), and whether the text is serde's
    /// own word on a value of the wrong shape (`invalid_type`,
    /// `invalid_value`, `unknown_variant`… — what a message of another
    /// type decodes into) rather than a `Deserialize` impl's own refusal
    /// (`custom`).
    pub(crate) fn refusal_of<E>(&self, e: Fail<E>) -> Result<(String, bool), E> {
        match e {
            Fail::Custom(text) => Ok((text.0, text.1)),
            Fail::Inner(e) => self.text.take().map(|t| (t.0, t.1)).ok_or(e),
        }
    }
}

/// Decodes postcard `bytes` as a `T` (as `postcard::from_bytes` does, with
/// no depth limit), keeping the refusing `Deserialize` impl's text.
///
/// For `mproc`'s decodes of values whose errors reach a user: a child's
/// result, a pool task's arguments and answers.
pub fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, crate::DecodeError> {
    let limit = Limit::new(usize::MAX);
    let mut de = postcard::Deserializer::from_bytes(bytes);
    T::deserialize(Deserializer::new(&mut de, &limit)).map_err(|e| match limit.text_of(e) {
        Ok(text) => crate::DecodeError::new(text),
        Err(e) => crate::DecodeError::from_source(e),
    })
}

/// A custom error's text.
#[derive(Debug)]
pub(crate) struct Text(String, bool);

/// The wrappers' error: the inner deserializer's, or a custom text.
#[derive(Debug)]
pub(crate) enum Fail<E> {
    Inner(E),
    /// Boxed: the wrappers' results stay small on the success path (a
    /// decode of structured values measured ~10% slower with the text
    /// inline).
    Custom(Box<Text>),
}

impl<E: fmt::Display> fmt::Display for Fail<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Inner(e) => e.fmt(f),
            Fail::Custom(text) => f.write_str(&text.0),
        }
    }
}

impl<E: std::error::Error> std::error::Error for Fail<E> {}

impl<E: de::Error> de::Error for Fail<E> {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Fail::Custom(Box::new(Text(msg.to_string(), false)))
    }

    // serde's own errors about a value of the wrong shape: the same texts
    // as serde's defaults, marked as shape errors (a typed message's
    // decode reports them as a type mismatch, not as a refusal).
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        shape(format_args!("invalid type: {unexp}, expected {exp}"))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        shape(format_args!("invalid value: {unexp}, expected {exp}"))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        shape(format_args!("invalid length {len}, expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        shape(format_args!(
            "unknown variant `{variant}`, expected one of {expected:?}"
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        shape(format_args!(
            "unknown field `{field}`, expected one of {expected:?}"
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        shape(format_args!("missing field `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        shape(format_args!("duplicate field `{field}`"))
    }
}

/// A shape error's [`Fail`] (see `refusal_of`).
fn shape<E>(text: fmt::Arguments<'_>) -> Fail<E> {
    Fail::Custom(Box::new(Text(text.to_string(), true)))
}

/// What a container beyond a limit of `.0` levels is refused with: the
/// custom error's text (for formats that keep it) and the caller's report.
pub(crate) struct TooDeep(pub(crate) usize);

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the message nests deeper than {} levels", self.0)
    }
}

/// The depth at which a wrapper sits, and the limit it answers to.
#[derive(Clone, Copy)]
struct Budget<'l> {
    depth: usize,
    limit: &'l Limit,
}

impl<'l> Budget<'l> {
    /// Opens a container: one level deeper, or the error at the limit.
    #[inline]
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.limit.max {
            self.limit.hit.set(true);
            return Err(E::custom(TooDeep(self.limit.max)));
        }
        Ok(self.deeper())
    }

    /// Hands a visitor to a scalar: no level is opened, but anything the
    /// visitor is handed back still counts one deeper, so even an inner
    /// deserializer that answers a scalar request with a container cannot
    /// recurse unchecked.
    #[inline]
    fn deeper(self) -> Self {
        Budget {
            depth: self.depth.saturating_add(1),
            limit: self.limit,
        }
    }
}

/// A deserializer that fails, rather than recursing, when the value nests
/// deeper than its [`Limit`].
pub(crate) struct Deserializer<'l, D> {
    inner: D,
    budget: Budget<'l>,
}

impl<'l, D> Deserializer<'l, D> {
    /// Wraps `inner` (the top level, depth 0) under `limit`.
    #[inline]
    pub(crate) fn new(inner: D, limit: &'l Limit) -> Self {
        Deserializer {
            inner,
            budget: Budget { depth: 0, limit },
        }
    }
}

/// The visitor, access or seed `T`, one level down.
struct Wrap<'l, T> {
    inner: T,
    budget: Budget<'l>,
}

#[inline]
fn wrap<T>(inner: T, budget: Budget<'_>) -> Wrap<'_, T> {
    Wrap { inner, budget }
}

/// Forwards `deserialize_*` methods that read a scalar.
macro_rules! scalars {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let limit = self.budget.limit;
            self.inner
                .$method(wrap(visitor, self.budget.deeper()))
                .map_err(|e| limit.lift(e))
        }
    )*};
}

/// Forwards `deserialize_*` methods that open a container.
macro_rules! containers {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let budget = self.budget.enter()?;
            self.inner
                .$method(wrap(visitor, budget))
                .map_err(|e| budget.limit.lift(e))
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Deserializer<'_, D> {
    type Error = Fail<D::Error>;

    scalars! {
        deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_identifier
    }

    // `any` and `ignored_any` may walk a whole nested value.
    containers! {
        deserialize_any deserialize_ignored_any
        deserialize_option deserialize_seq deserialize_map
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let limit = self.budget.limit;
        self.inner
            .deserialize_unit_struct(name, wrap(visitor, self.budget.deeper()))
            .map_err(|e| limit.lift(e))
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_newtype_struct(name, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_tuple(len, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_tuple_struct(name, len, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_struct(name, fields, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_enum(name, variants, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards `visit_*` methods that take a value.
macro_rules! visit_values {
    ($($method:ident: $ty:ty)*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            let limit = self.budget.limit;
            self.inner.$method::<Fail<E>>(v).map_err(|e| limit.lower(e))
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit_values! {
        visit_bool: bool
        visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64 visit_i128: i128
        visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64 visit_u128: u128
        visit_f32: f32 visit_f64: f64 visit_char: char
        visit_str: &str visit_borrowed_str: &'de str visit_string: String
        visit_bytes: &[u8] visit_borrowed_bytes: &'de [u8] visit_byte_buf: Vec<u8>
    }

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        let limit = self.budget.limit;
        self.inner
            .visit_none::<Fail<E>>()
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        let limit = self.budget.limit;
        self.inner
            .visit_unit::<Fail<E>>()
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_some(Deserializer {
                inner: d,
                budget: self.budget,
            })
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_newtype_struct(Deserializer {
                inner: d,
                budget: self.budget,
            })
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_seq(wrap(seq, self.budget))
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_map(wrap(map, self.budget))
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_enum(wrap(data, self.budget))
            .map_err(|e| limit.lower(e))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let limit = self.budget.limit;
        self.inner
            .deserialize(Deserializer {
                inner: d,
                budget: self.budget,
            })
            .map_err(|e| limit.lower(e))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<'_, A> {
    type Error = Fail<A::Error>;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.inner
            .next_element_seed(wrap(seed, self.budget))
            .map_err(|e| self.budget.limit.lift(e))
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<'_, A> {
    type Error = Fail<A::Error>;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.inner
            .next_key_seed(wrap(seed, self.budget))
            .map_err(|e| self.budget.limit.lift(e))
    }

    #[inline]
    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.inner
            .next_value_seed(wrap(seed, self.budget))
            .map_err(|e| self.budget.limit.lift(e))
    }

    #[inline]
    fn next_entry_seed<K: DeserializeSeed<'de>, T: DeserializeSeed<'de>>(
        &mut self,
        key: K,
        value: T,
    ) -> Result<Option<(K::Value, T::Value)>, Self::Error> {
        self.inner
            .next_entry_seed(wrap(key, self.budget), wrap(value, self.budget))
            .map_err(|e| self.budget.limit.lift(e))
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'l, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<'l, A> {
    type Error = Fail<A::Error>;
    type Variant = Wrap<'l, A::Variant>;

    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        let budget = self.budget;
        let (value, variant) = self
            .inner
            .variant_seed(wrap(seed, budget))
            .map_err(|e| budget.limit.lift(e))?;
        Ok((value, wrap(variant, budget)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<'_, A> {
    type Error = Fail<A::Error>;

    #[inline]
    fn unit_variant(self) -> Result<(), Self::Error> {
        let limit = self.budget.limit;
        self.inner.unit_variant().map_err(|e| limit.lift(e))
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let limit = self.budget.limit;
        self.inner
            .newtype_variant_seed(wrap(seed, self.budget))
            .map_err(|e| limit.lift(e))
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .tuple_variant(len, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .struct_variant(fields, wrap(visitor, budget))
            .map_err(|e| budget.limit.lift(e))
    }
}
