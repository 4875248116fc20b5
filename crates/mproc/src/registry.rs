//! The target registry and the compile-time link between a target fn and
//! its arguments.
//!
//! `#[mproc::target]` registers a [`TargetEntry`] (the fn's name, a way to
//! get its `TypeId`, and its monomorphised entry fns, one per [entry
//! kind](kinds)) from an *early constructor*: one the platform runs before
//! every ordinary constructor (an `.init_array` priority section on ELF,
//! `.CRT$XCT` on Windows, before `.CRT$XCU`; see `sys`), among them mproc's
//! own bootstrap constructor. So the registry is complete when the child's
//! life-before-main bootstrap reads it (see docs/architecture.md, "Why a
//! constructor").
//!
//! The parent takes the entry fn of a launch from there and sends its
//! offset from an anchor fn of this same binary; the child accepts the
//! offset only if it is the offset of a registered entry
//! ([`entry_at`]), so a forged launch record cannot jump anywhere else.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bootstrap::{offset_of, EntryFn};

/// One registered target (built by `#[mproc::target]`).
#[doc(hidden)]
pub struct TargetEntry {
    name: &'static str,
    type_id: fn() -> TypeId,
    entries: fn() -> Entries,
}

impl TargetEntry {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        type_id: fn() -> TypeId,
        entries: fn() -> Entries,
    ) -> Self {
        TargetEntry {
            name,
            type_id,
            entries,
        }
    }
}

/// A node of the registry (a lock-free list of statics, pushed by the
/// early constructors `#[mproc::target]` generates).
#[doc(hidden)]
pub struct Registration {
    entry: TargetEntry,
    next: AtomicPtr<Registration>,
}

impl Registration {
    #[doc(hidden)]
    pub const fn new(entry: TargetEntry) -> Self {
        Registration {
            entry,
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Adds this target to the registry (from its early constructor).
    #[doc(hidden)]
    pub fn register(&'static self) {
        let me = self as *const Registration as *mut Registration;
        let mut head = HEAD.load(Ordering::Acquire);
        loop {
            self.next.store(head, Ordering::Relaxed);
            match HEAD.compare_exchange_weak(head, me, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

static HEAD: AtomicPtr<Registration> = AtomicPtr::new(std::ptr::null_mut());

/// Every registered target of this executable.
fn targets() -> impl Iterator<Item = &'static TargetEntry> {
    let mut at = HEAD.load(Ordering::Acquire);
    std::iter::from_fn(move || {
        // SAFETY: every pointer in the list comes from a `&'static
        // Registration` (`register`), and nodes are never removed.
        let node = unsafe { at.as_ref() }?;
        at = node.next.load(Ordering::Acquire);
        Some(&node.entry)
    })
}

/// A target's entry fns, by kind name (`None` where the target's return
/// type does not fit the kind).
#[doc(hidden)]
pub type Entries = [(&'static str, Option<EntryFn>); kinds::COUNT];

#[doc(hidden)]
pub fn type_id_of<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

fn registration<F: 'static>() -> Option<&'static TargetEntry> {
    let id = TypeId::of::<F>();
    targets().find(|e| (e.type_id)() == id)
}

/// The registered name of `F`, if it is a fn registered with `#[mproc::target]`.
pub(crate) fn registered_name<F: 'static>() -> Option<&'static str> {
    registration::<F>().map(|e| e.name)
}

/// The registered entry fn of kind `kind` (e.g. `"spawn_entry"`) of the
/// target `F`, if any.
pub(crate) fn registered_entry<F: 'static>(kind: &str) -> Option<EntryFn> {
    let entries = (registration::<F>()?.entries)();
    entries
        .into_iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, e)| e)
}

/// The entry fn at `offset` from the anchor, if it is one of a registered
/// target (of any kind): the only way a child turns a launch record into
/// code to run.
pub(crate) fn entry_at(offset: i64) -> Option<EntryFn> {
    targets()
        .flat_map(|t| (t.entries)())
        .filter_map(|(_, e)| e)
        .find(|e| offset_of(*e) == offset)
}

/// A target fn type `F` with its argument tuple `A`, whose entry fns the
/// kinds' traits pick by the target's return type (autoref
/// specialisation, in the code `#[mproc::target]` generates).
#[doc(hidden)]
pub struct Probe<F, A>(PhantomData<fn() -> (F, A)>);

impl<F, A> Probe<F, A> {
    #[doc(hidden)]
    pub fn new(_target: &F) -> Self {
        Probe(PhantomData)
    }
}

/// One entry kind: `Has` gives the entry fn when the target's output
/// meets `$bound`; `Lacks` (one autoref further) gives `None` otherwise.
macro_rules! entry_kind {
    ($kind:ident where $($bound:tt)+) => {
        #[doc(hidden)]
        pub mod $kind {
            use super::super::{Args, Probe, Target};
            use crate::bootstrap::EntryFn;

            pub trait Has {
                fn $kind(&self) -> Option<EntryFn>;
            }
            impl<F: Target<A>, A: Args> Has for Probe<F, A>
            where
                F::Output: $($bound)+,
            {
                fn $kind(&self) -> Option<EntryFn> {
                    Some(crate::bootstrap::$kind::<F, A>)
                }
            }

            pub trait Lacks {
                fn $kind(&self) -> Option<EntryFn>;
            }
            impl<T> Lacks for &T {
                fn $kind(&self) -> Option<EntryFn> {
                    None
                }
            }
        }
    };
}

/// Declares the entry kinds, and the macro `#[mproc::target]` expands to
/// list a target's entries (`__mproc_entries!`).
macro_rules! entry_kinds {
    ($d:tt; $($kind:ident where $bound:path;)*) => {
        /// The kinds of entry fn a target may have.
        #[doc(hidden)]
        pub mod kinds {
            $(entry_kind!($kind where $bound);)*
            /// How many kinds there are.
            pub const COUNT: usize = [$(stringify!($kind)),*].len();
        }

        /// A registered target's entries (used by `#[mproc::target]`).
        #[doc(hidden)]
        #[macro_export]
        macro_rules! __mproc_entries {
            ($d probe:expr) => {{
                $(
                    #[allow(unused_imports)]
                    use $crate::__private::kinds::$kind::{Has as _, Lacks as _};
                )*
                [$((stringify!($kind), (&$d probe).$kind())),*]
            }};
        }
    };
}

// The entry kinds: adding one is one line here (and its entry fn, generic
// over `<F, A>`, in bootstrap.rs).
entry_kinds! { $;
    process_entry where crate::registry::ProcessOutput;
    spawn_entry where ::serde::Serialize;
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
/// stderr). A target that returns a value is started with
/// [`mproc::spawn`](crate::spawn), whose `join` gives the value.
#[diagnostic::on_unimplemented(
    message = "a `Process` target must return `()` or `Result<(), E>`, not `{Self}`",
    label = "this target returns `{Self}`",
    note = "to get a value back from a child process, use `mproc::spawn(f, args)?.join()` instead of `Process`"
)]
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
