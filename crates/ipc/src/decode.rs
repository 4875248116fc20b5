//! The one wrapper every decode of a user's value goes through: a
//! nesting limit, the refusing impl's error text, and (for a typed
//! message) the shape hash, in a single layer around postcard.
//!
//! **Nesting.** postcard recurses once per nesting level of the value it
//! decodes and has no limit of its own, so a type that nests without
//! bound (`enum Tree { Leaf, Node(Box<Tree>) }`) lets a hostile message of
//! nesting tags overflow the receiving thread's stack, which aborts the
//! process. [`Deserializer`] wraps another deserializer and counts
//! nesting: every container it hands on (option, newtype, sequence,
//! tuple, map, struct, enum, tuple and struct variant) is one level, and
//! opening a container at the limit is an error instead of a deeper
//! recursion. Scalars (integers, strings, bytes, unit, identifiers) are
//! not levels: they cannot nest.
//!
//! The depth is carried by value through the wrappers of every visitor,
//! access and seed handed back to the inner deserializer (the shape of
//! `serde_stacker`'s adapter), so a level ends when its call returns, on
//! every path, error or not. Nothing is allocated; the wrappers inline
//! away.
//!
//! **Error text.** postcard drops a custom error's text ("Serde
//! Deserialization Error"), so the wrappers also keep it: their error type
//! is [`Fail`], whose `custom` keeps the text a `Deserialize` impl or
//! visitor gives (its own refusal, serde's "invalid length 1, expected
//! ...", the limit's), and where a wrapped call must hand the inner
//! deserializer its own error type the text waits in the [`Limit`] and
//! comes back out one level up (the encode side does the same:
//! `crate::encode`). The limit also records that it was hit, for the
//! caller to report.
//!
//! **Shape.** The same wrappers report the serde data-model calls the
//! receiver's `Deserialize` makes to the limit's [`Shape`]: nothing for
//! [`from_bytes`] (`()`, which compiles away), the typed message's
//! fingerprint for `tag::decode` (`tag/shape.rs` says what is hashed and
//! how). One layer does both, where a hashing wrapper over a counting one
//! used to double the calls per value.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

use crate::tag::shape::kind;

/// The nesting limit of typed messages: generous for real data (serde_json
/// uses the same), and a small fraction of a 2 MiB thread stack even in a
/// debug build (see `docs/reliability.md`).
pub(crate) const DEFAULT_LIMIT: usize = 128;

/// What a decode records of the serde calls it forwards (see
/// `tag/shape.rs` for the events): `()` records nothing.
pub(crate) trait Shape {
    /// Adds the event `x`.
    fn add(&self, x: u64);
    /// Adds the event `x`, then `name`.
    fn add_named(&self, x: u64, name: &str);
    /// Adds a field's `name`.
    fn name(&self, name: &str);
    /// Starts one element's own record; returns the enclosing one.
    fn open(&self) -> u64;
    /// Ends an element begun with [`open`](Self::open); `last` is the
    /// previous element's record, for runs of equal elements.
    fn close(&self, outer: u64, last: &mut Option<u64>);
    /// Drops what was recorded since [`open`](Self::open) returned `outer`.
    fn reset(&self, outer: u64);

    /// Adds the variant `index`, named by the receiver's `variants`.
    #[inline]
    fn variant(&self, index: u64, variants: &[&str]) {
        let name = usize::try_from(index).ok().and_then(|i| variants.get(i));
        match name {
            Some(name) => self.add_named(index, name),
            None => self.add(kind::OTHER),
        }
    }
}

impl Shape for () {
    #[inline]
    fn add(&self, _: u64) {}
    #[inline]
    fn add_named(&self, _: u64, _: &str) {}
    #[inline]
    fn name(&self, _: &str) {}
    #[inline]
    fn open(&self) -> u64 {
        0
    }
    #[inline]
    fn close(&self, _: u64, _: &mut Option<u64>) {}
    #[inline]
    fn reset(&self, _: u64) {}
    #[inline]
    fn variant(&self, _: u64, _: &[&str]) {}
}

/// A depth limit and what the decode records, shared by every wrapper of
/// one decode.
pub(crate) struct Limit<H = ()> {
    max: usize,
    hit: Cell<bool>,
    text: Slot,
    shape: H,
}

/// The text of a custom error on its way up to the caller, between the
/// wrapper's error type and the inner format's (which would drop it).
/// Shared with the encode side (`crate::encode`).
#[derive(Default)]
pub(crate) struct Slot(Cell<Option<Box<Text>>>);

impl Slot {
    /// The wrapper's error for the inner format's `e`: the custom text a
    /// wrapped call left here, else `e` itself.
    #[inline]
    pub(crate) fn lift<E>(&self, e: E) -> Fail<E> {
        match self.0.take() {
            Some(text) => Fail::Custom(text),
            None => Fail::Inner(e),
        }
    }

    /// The inner format's error for the wrapper's `e` (`custom` makes one
    /// from a text), leaving a custom text here for [`lift`](Self::lift)
    /// one level up.
    #[inline]
    pub(crate) fn lower<E>(&self, e: Fail<E>, custom: impl FnOnce(&str) -> E) -> E {
        match e {
            Fail::Inner(e) => e,
            Fail::Custom(text) => {
                let e = custom(&text.0);
                self.0.set(Some(text));
                e
            }
        }
    }

    /// The text left here, if any, and whether it is a shape error.
    pub(crate) fn take(&self) -> Option<(String, bool)> {
        self.0.take().map(|t| (t.0, t.1))
    }
}

impl Limit {
    /// A limit of `max` nested containers, recording no shape.
    pub(crate) const fn new(max: usize) -> Self {
        Limit::with(max, ())
    }
}

impl<H> Limit<H> {
    /// A limit of `max` nested containers, recording the shape in `shape`.
    pub(crate) const fn with(max: usize, shape: H) -> Self {
        Limit {
            max,
            hit: Cell::new(false),
            text: Slot(Cell::new(None)),
            shape,
        }
    }

    /// What the decode recorded.
    pub(crate) fn shape(&self) -> &H {
        &self.shape
    }

    /// The number of nested containers allowed.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Whether a decode through this limit tried to nest deeper.
    pub(crate) fn exceeded(&self) -> bool {
        self.hit.get()
    }

    /// The wrapper's error for the inner deserializer's `e` (see
    /// [`Slot::lift`]).
    #[inline]
    fn lift<E>(&self, e: E) -> Fail<E> {
        self.text.lift(e)
    }

    /// The inner deserializer's error for the wrapper's `e` (see
    /// [`Slot::lower`]).
    #[inline]
    fn lower<E: de::Error>(&self, e: Fail<E>) -> E {
        self.text.lower(e, |text| E::custom(text))
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
            Fail::Inner(e) => self.text.take().ok_or(e),
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

/// A custom error's text, and whether it is a shape error.
#[derive(Debug)]
pub(crate) struct Text(String, bool);

impl<E> Fail<E> {
    /// A `custom` error's [`Fail`]: a refusal, not a shape error.
    pub(crate) fn custom_text(text: String) -> Self {
        Fail::Custom(Box::new(Text(text, false)))
    }

    /// The custom text, or the inner format's error.
    pub(crate) fn into_text(self) -> Result<String, E> {
        match self {
            Fail::Custom(text) => Ok(text.0),
            Fail::Inner(e) => Err(e),
        }
    }
}

/// The wrappers' error (decode and encode): the inner format's, or a
/// custom text.
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
        Fail::custom_text(msg.to_string())
    }

    // serde's own errors about a value of the wrong shape: the same texts
    // as serde's defaults, marked as shape errors (a typed message's
    // decode reports them as a type mismatch, not as a refusal).
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        shape_error(format_args!("invalid type: {unexp}, expected {exp}"))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        shape_error(format_args!("invalid value: {unexp}, expected {exp}"))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        shape_error(format_args!("invalid length {len}, expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        shape_error(format_args!(
            "unknown variant `{variant}`, expected one of {expected:?}"
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        shape_error(format_args!(
            "unknown field `{field}`, expected one of {expected:?}"
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        shape_error(format_args!("missing field `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        shape_error(format_args!("duplicate field `{field}`"))
    }
}

/// A shape error's [`Fail`] (see `refusal_of`).
fn shape_error<E>(text: fmt::Arguments<'_>) -> Fail<E> {
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
struct Budget<'l, H> {
    depth: usize,
    limit: &'l Limit<H>,
}

impl<H> Clone for Budget<'_, H> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for Budget<'_, H> {}

impl<'l, H: Shape> Budget<'l, H> {
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

    /// Where the decode records the calls.
    #[inline]
    fn shape(self) -> &'l H {
        &self.limit.shape
    }
}

/// A deserializer that fails, rather than recursing, when the value nests
/// deeper than its [`Limit`], and records the calls made of it in the
/// limit's [`Shape`].
pub(crate) struct Deserializer<'l, H, D> {
    inner: D,
    budget: Budget<'l, H>,
}

impl<'l, H, D> Deserializer<'l, H, D> {
    /// Wraps `inner` (the top level, depth 0) under `limit`.
    #[inline]
    pub(crate) fn new(inner: D, limit: &'l Limit<H>) -> Self {
        Deserializer {
            inner,
            budget: Budget { depth: 0, limit },
        }
    }
}

/// How a wrapped visitor records what the inner deserializer hands it.
#[derive(Clone, Copy)]
enum Mode {
    /// A scalar's visitor: postcard answers a scalar request with that
    /// scalar, which the request itself recorded.
    Scalar,
    /// Nothing of its own (the call was recorded when it was made); `none`
    /// and `some` add their events.
    Plain,
    /// The elements of a `seq` or `map`: each alone, runs counted once.
    Seq,
    /// The elements of a tuple, inline.
    Inline,
    /// The fields of a struct (or struct variant), named by the receiver.
    Fields(&'static [&'static str]),
    /// An enum's variants: the variant index read names one.
    Enum(&'static [&'static str]),
}

/// A visitor, one level down.
struct Visit<'l, H, V> {
    inner: V,
    budget: Budget<'l, H>,
    mode: Mode,
}

#[inline]
fn visit<H, V>(inner: V, budget: Budget<'_, H>, mode: Mode) -> Visit<'_, H, V> {
    Visit {
        inner,
        budget,
        mode,
    }
}

/// A sequence, map, enum or variant access, one level down.
struct Access<'l, H, A> {
    inner: A,
    budget: Budget<'l, H>,
    mode: Mode,
    /// Seq and map: the previous element's record.
    last: Option<u64>,
    /// Fields: the next field's index.
    index: usize,
    /// Map: the record enclosing the entry being read.
    outer: u64,
}

#[inline]
fn access<H, A>(inner: A, budget: Budget<'_, H>, mode: Mode) -> Access<'_, H, A> {
    Access {
        inner,
        budget,
        mode,
        last: None,
        index: 0,
        outer: 0,
    }
}

/// A seed whose value deserializes through a [`Deserializer`], after
/// recording `name` (a field's) if any.
struct Seed<'l, H, S> {
    inner: S,
    budget: Budget<'l, H>,
    name: Option<&'static str>,
}

#[inline]
fn seed<'l, H, S>(inner: S, budget: Budget<'l, H>, name: Option<&'static str>) -> Seed<'l, H, S> {
    Seed {
        inner,
        budget,
        name,
    }
}

/// Forwards `deserialize_*` methods that read a scalar, recording its kind.
macro_rules! scalars {
    ($($method:ident => $kind:expr),* $(,)?) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let limit = self.budget.limit;
            limit.shape.add($kind);
            self.inner
                .$method(visit(visitor, self.budget.deeper(), Mode::Scalar))
                .map_err(|e| limit.lift(e))
        }
    )*};
}

impl<'de, H: Shape, D: de::Deserializer<'de>> de::Deserializer<'de> for Deserializer<'_, H, D> {
    type Error = Fail<D::Error>;

    scalars! {
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
        deserialize_identifier => kind::OTHER,
    }

    // `any` and `ignored_any` may walk a whole nested value.
    #[inline]
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.budget.shape().add(kind::OTHER);
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_any(visit(visitor, budget, Mode::Scalar))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.budget.shape().add(kind::OTHER);
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_ignored_any(visit(visitor, budget, Mode::Scalar))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_option(visit(visitor, budget, Mode::Plain))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let limit = self.budget.limit;
        limit.shape.add_named(kind::UNIT_STRUCT, name);
        self.inner
            .deserialize_unit_struct(name, visit(visitor, self.budget.deeper(), Mode::Plain))
            .map_err(|e| limit.lift(e))
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.budget.shape().add_named(kind::NEWTYPE_STRUCT, name);
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_newtype_struct(name, visit(visitor, budget, Mode::Plain))
            .map_err(|e| budget.limit.lift(e))
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add(kind::SEQ);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .deserialize_seq(visit(visitor, budget, Mode::Seq))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add(kind::TUPLE);
        shape.add(len as u64);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .deserialize_tuple(len, visit(visitor, budget, Mode::Inline))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add_named(kind::TUPLE_STRUCT, name);
        shape.add(len as u64);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .deserialize_tuple_struct(name, len, visit(visitor, budget, Mode::Inline))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }

    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add(kind::MAP);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .deserialize_map(visit(visitor, budget, Mode::Seq))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add_named(kind::STRUCT, name);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .deserialize_struct(name, fields, visit(visitor, budget, Mode::Fields(fields)))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.budget.shape().add_named(kind::ENUM, name);
        let budget = self.budget.enter()?;
        self.inner
            .deserialize_enum(name, variants, visit(visitor, budget, Mode::Enum(variants)))
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

impl<'de, H: Shape, V: Visitor<'de>> Visitor<'de> for Visit<'_, H, V> {
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
        if !matches!(self.mode, Mode::Scalar) {
            limit.shape.add(kind::NONE);
        }
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
        if !matches!(self.mode, Mode::Scalar) {
            limit.shape.add(kind::SOME);
        }
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
            .visit_seq(access(seq, self.budget, self.mode))
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_map(access(map, self.budget, self.mode))
            .map_err(|e| limit.lower(e))
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let limit = self.budget.limit;
        self.inner
            .visit_enum(access(data, self.budget, self.mode))
            .map_err(|e| limit.lower(e))
    }
}

impl<'de, H: Shape, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, H, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let limit = self.budget.limit;
        if let Some(name) = self.name {
            limit.shape.name(name);
        }
        self.inner
            .deserialize(Deserializer {
                inner: d,
                budget: self.budget,
            })
            .map_err(|e| limit.lower(e))
    }
}

impl<'de, H: Shape, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, H, A> {
    type Error = Fail<A::Error>;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        value: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        let budget = self.budget;
        match self.mode {
            Mode::Seq => {
                let shape = budget.shape();
                let outer = shape.open();
                let next = self
                    .inner
                    .next_element_seed(seed(value, budget, None))
                    .map_err(|e| budget.limit.lift(e))?;
                match next {
                    Some(v) => {
                        shape.close(outer, &mut self.last);
                        Ok(Some(v))
                    }
                    None => {
                        shape.reset(outer);
                        Ok(None)
                    }
                }
            }
            Mode::Fields(fields) => {
                // A field past the receiver's names (never, for derived
                // types) is recorded as an unnamed one.
                let name = fields.get(self.index).copied().unwrap_or("\u{0}");
                self.index += 1;
                self.inner
                    .next_element_seed(seed(value, budget, Some(name)))
                    .map_err(|e| budget.limit.lift(e))
            }
            _ => self
                .inner
                .next_element_seed(seed(value, budget, None))
                .map_err(|e| budget.limit.lift(e)),
        }
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, H: Shape, A: MapAccess<'de>> MapAccess<'de> for Access<'_, H, A> {
    type Error = Fail<A::Error>;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        key: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let budget = self.budget;
        let outer = budget.shape().open();
        let key = self
            .inner
            .next_key_seed(seed(key, budget, None))
            .map_err(|e| budget.limit.lift(e))?;
        if key.is_none() {
            budget.shape().reset(outer);
        }
        self.outer = outer;
        Ok(key)
    }

    #[inline]
    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        value: T,
    ) -> Result<T::Value, Self::Error> {
        let budget = self.budget;
        let v = self
            .inner
            .next_value_seed(seed(value, budget, None))
            .map_err(|e| budget.limit.lift(e))?;
        budget.shape().close(self.outer, &mut self.last);
        Ok(v)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'l, 'de, H: Shape, A: EnumAccess<'de>> EnumAccess<'de> for Access<'l, H, A> {
    type Error = Fail<A::Error>;
    type Variant = Access<'l, H, A::Variant>;

    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        let variants = match self.mode {
            Mode::Enum(variants) => variants,
            _ => &[],
        };
        let budget = self.budget;
        let (value, variant) = self
            .inner
            .variant_seed(VariantSeed {
                inner: seed,
                budget,
                variants,
            })
            .map_err(|e| budget.limit.lift(e))?;
        Ok((value, access(variant, budget, Mode::Plain)))
    }
}

impl<'de, H: Shape, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, H, A> {
    type Error = Fail<A::Error>;

    #[inline]
    fn unit_variant(self) -> Result<(), Self::Error> {
        let limit = self.budget.limit;
        limit.shape.add(kind::UNIT_VARIANT);
        self.inner.unit_variant().map_err(|e| limit.lift(e))
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        value: T,
    ) -> Result<T::Value, Self::Error> {
        let limit = self.budget.limit;
        limit.shape.add(kind::NEWTYPE_VARIANT);
        self.inner
            .newtype_variant_seed(seed(value, self.budget, None))
            .map_err(|e| limit.lift(e))
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add(kind::TUPLE_VARIANT);
        shape.add(len as u64);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .tuple_variant(len, visit(visitor, budget, Mode::Inline))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let shape = self.budget.shape();
        shape.add(kind::STRUCT_VARIANT);
        let budget = self.budget.enter()?;
        let v = self
            .inner
            .struct_variant(fields, visit(visitor, budget, Mode::Fields(fields)))
            .map_err(|e| budget.limit.lift(e))?;
        shape.add(kind::END);
        Ok(v)
    }
}

/// The seed of an enum's variant identifier: records the index it reads
/// and the receiver's name for it.
struct VariantSeed<'l, H, S> {
    inner: S,
    budget: Budget<'l, H>,
    variants: &'static [&'static str],
}

impl<'de, H: Shape, S: DeserializeSeed<'de>> DeserializeSeed<'de> for VariantSeed<'_, H, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let limit = self.budget.limit;
        self.inner
            .deserialize(VariantDe {
                inner: d,
                budget: self.budget,
                variants: self.variants,
            })
            .map_err(|e| limit.lower(e))
    }
}

/// The deserializer of a variant identifier: counts nesting as
/// [`Deserializer`] does, and every visitor it hands on records the index
/// it is given.
struct VariantDe<'l, H, D> {
    inner: D,
    budget: Budget<'l, H>,
    variants: &'static [&'static str],
}

/// The visitor of a variant identifier (under a [`Visit`], which keeps
/// the error text).
struct VariantVisitor<'l, H, V> {
    inner: V,
    shape: &'l H,
    variants: &'static [&'static str],
}

macro_rules! variant_index {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.shape.variant(u64::from(v), self.variants);
            self.inner.$method(v)
        }
    )*};
}

impl<'de, H: Shape, V: Visitor<'de>> Visitor<'de> for VariantVisitor<'_, H, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    variant_index! { visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64 }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.shape.add(kind::OTHER);
        self.inner.visit_str(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        self.shape.add(kind::OTHER);
        self.inner.visit_bytes(v)
    }
}

impl<'l, H, D> VariantDe<'l, H, D> {
    /// `visitor` as the variant identifier's visitor, under `budget`.
    #[inline]
    fn visitor<V>(
        &self,
        visitor: V,
        budget: Budget<'l, H>,
    ) -> Visit<'l, H, VariantVisitor<'l, H, V>> {
        let inner = VariantVisitor {
            inner: visitor,
            shape: &budget.limit.shape,
            variants: self.variants,
        };
        visit(inner, budget, Mode::Scalar)
    }
}

/// Forwards the variant identifier's `deserialize_*` methods of a scalar.
macro_rules! variant_scalars {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let budget = self.budget.deeper();
            let visitor = self.visitor(visitor, budget);
            self.inner.$method(visitor).map_err(|e| budget.limit.lift(e))
        }
    )*};
}

/// Forwards the variant identifier's `deserialize_*` methods of a
/// container.
macro_rules! variant_containers {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let budget = self.budget.enter()?;
            let visitor = self.visitor(visitor, budget);
            self.inner.$method(visitor).map_err(|e| budget.limit.lift(e))
        }
    )*};
}

impl<'de, H: Shape, D: de::Deserializer<'de>> de::Deserializer<'de> for VariantDe<'_, H, D> {
    type Error = Fail<D::Error>;

    variant_scalars! {
        deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_identifier
    }

    variant_containers! {
        deserialize_any deserialize_ignored_any
        deserialize_option deserialize_seq deserialize_map
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}
