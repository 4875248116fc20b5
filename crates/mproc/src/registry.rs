//! The target registry and the compile-time link between a target fn and
//! its arguments.
//!
//! `#[mproc::target]` submits a [`TargetEntry`] (the fn's name and a way to
//! get its `TypeId`) to an `inventory` registry. The parent looks a target
//! up there, in `start()`, where the registry is complete on every OS.
//! The child does not look anything up: the parent tells it where the
//! monomorphised entry for this (target, args) pair sits relative to an
//! anchor fn of this same binary (see `bootstrap.rs`), so nothing depends
//! on the order in which life-before-main constructors run.

use std::any::TypeId;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One registered target (built by `#[mproc::target]`).
#[doc(hidden)]
pub struct TargetEntry {
    name: &'static str,
    type_id: fn() -> TypeId,
}

impl TargetEntry {
    #[doc(hidden)]
    pub const fn new(name: &'static str, type_id: fn() -> TypeId) -> Self {
        TargetEntry { name, type_id }
    }
}

inventory::collect!(TargetEntry);

#[doc(hidden)]
pub fn type_id_of<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

/// The registered name of `F`, if it is a fn registered with `#[mproc::target]`.
pub(crate) fn registered_name<F: 'static>() -> Option<&'static str> {
    let id = TypeId::of::<F>();
    inventory::iter::<TargetEntry>
        .into_iter()
        .find(|e| (e.type_id)() == id)
        .map(|e| e.name)
}

/// The full path of a fn item type, and its last segment.
pub(crate) fn target_names<F>() -> (String, String) {
    let full = std::any::type_name::<F>().to_string();
    let short = full.rsplit("::").next().unwrap_or(&full).to_string();
    (full, short)
}

/// A function usable as a process target with arguments `Args` (a tuple of
/// 0 to 6 elements). Implemented for every fn whose parameters match
/// `Args`: a target and its arguments are checked against each other at
/// compile time, and a one-parameter target takes `(x,)`, as in Python.
pub trait Target<Args>: Copy + Send + 'static {
    /// What the target returns.
    type Output;
    /// Calls the target.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_target {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a,)*> Target<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case, clippy::unused_unit)]
            fn call(self, args: ($($a,)*)) -> Ret {
                let ($($a,)*) = args;
                self($($a),*)
            }
        }
    };
}

impl_target!();
impl_target!(A0);
impl_target!(A0, A1);
impl_target!(A0, A1, A2);
impl_target!(A0, A1, A2, A3);
impl_target!(A0, A1, A2, A3, A4);
impl_target!(A0, A1, A2, A3, A4, A5);

/// What a [`Process`](crate::Process) target may return: `()`, or
/// `Result<(), E>` with `E: Display` (`Err` → exit code 1, the error on
/// stderr).
pub trait ProcessOutput {
    /// `Ok` for success, `Err(text)` for a failure to report.
    fn into_outcome(self) -> Result<(), String>;
}

impl ProcessOutput for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> ProcessOutput for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Arguments that can cross into a child: a tuple of serde types (and
/// connection or queue handles).
pub trait Args: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Args for T {}

/// Conjures the value of a zero-sized fn item type. Sound because fn item
/// types are inhabited, have no bytes and no invariants; callers check the
/// size first.
pub(crate) fn conjure<F: Copy>() -> Option<F> {
    if std::mem::size_of::<F>() != 0 {
        return None;
    }
    // SAFETY: F is a zero-sized fn item type (checked above and guaranteed
    // by registration): it has exactly one value, which has no bytes.
    Some(unsafe { std::mem::zeroed::<F>() })
}
