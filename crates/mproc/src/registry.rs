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

use crate::spawn::entry::{offset_of, EntryFn, TaskFn};

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

/// A target's entry fns, by kind name, as addresses (`None` where the
/// target's return type does not fit the kind). Each kind has one fn type
/// ([`EntryFn`] for launches, [`TaskFn`] for pool tasks): an address is
/// turned back into a fn only by [`entry_at`] / [`task_at`], and only
/// from the kinds of that type.
#[doc(hidden)]
pub type Entries = [(&'static str, Option<usize>); kinds::COUNT];

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

/// The registered entry fn of kind `kind` (`"process_entry"` or
/// `"spawn_entry"`) of the target `F`, if any.
pub(crate) fn registered_entry<F: 'static>(kind: &str) -> Option<EntryFn> {
    if !LAUNCH_KINDS.contains(&kind) {
        return None;
    }
    let entries = (registration::<F>()?.entries)();
    let addr = entries
        .into_iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, e)| e)?;
    // SAFETY: the address was taken from an `EntryFn` (the launch kinds'
    // fn type, see `entry_kinds!` below) in this very process.
    Some(unsafe { std::mem::transmute::<usize, EntryFn>(addr) })
}

/// The kinds whose fns are [`EntryFn`]s (what a launch record may name).
const LAUNCH_KINDS: &[&str] = &["process_entry", "spawn_entry"];
/// The kinds whose fns are [`TaskFn`]s (what a pool task may name).
const TASK_KINDS: &[&str] = &["task_entry", "init_entry"];

/// Entry fns of mproc's own that a launch record may name: the pool
/// worker's loop (it runs registered task runners only, see [`task_at`])
/// and the forkserver's.
fn internal_entries() -> [EntryFn; 2] {
    [
        crate::pool::worker::worker_entry,
        crate::forkserver::server_entry,
    ]
}

/// The address of a registered fn of one of `kinds` at `offset` from the
/// anchor.
fn registered_at(offset: i64, kinds: &[&str]) -> Option<usize> {
    targets()
        .flat_map(|t| (t.entries)())
        .filter(|(k, _)| kinds.contains(k))
        .filter_map(|(_, e)| e)
        .find(|addr| offset_from_anchor(*addr) == offset)
}

/// The entry fn at `offset` from the anchor, if it is one of a registered
/// target (of a launch kind) or one of mproc's own: the only way a child
/// turns a launch record into code to run.
pub(crate) fn entry_at(offset: i64) -> Option<EntryFn> {
    if let Some(own) = internal_entries()
        .into_iter()
        .find(|e| offset_of(*e) == offset)
    {
        return Some(own);
    }
    let addr = registered_at(offset, LAUNCH_KINDS)?;
    // SAFETY: `addr` is the address of a registered fn of a launch kind,
    // all of which are `EntryFn`s (`entry_kinds!` below).
    Some(unsafe { std::mem::transmute::<usize, EntryFn>(addr) })
}

/// The pool task runner at `offset` from the anchor, if it is one of a
/// registered target: the only way a pool worker turns a task into code
/// to run. The last offset accepted is remembered, so a stream of tasks of
/// one target pays the registry walk once.
pub(crate) fn task_at(offset: i64) -> Option<TaskFn> {
    static LAST: std::sync::Mutex<Option<(i64, usize)>> = std::sync::Mutex::new(None);
    let cached = LAST
        .lock()
        .ok()
        .and_then(|l| *l)
        .filter(|(o, _)| *o == offset)
        .map(|(_, a)| a);
    let addr = match cached {
        Some(addr) => addr,
        None => {
            let addr = registered_at(offset, TASK_KINDS)?;
            if let Ok(mut l) = LAST.lock() {
                *l = Some((offset, addr));
            }
            addr
        }
    };
    // SAFETY: `addr` is the address of a registered fn of a task kind,
    // all of which are `TaskFn`s (`entry_kinds!` below).
    Some(unsafe { std::mem::transmute::<usize, TaskFn>(addr) })
}

fn offset_from_anchor(addr: usize) -> i64 {
    // SAFETY: `addr` is the address of a registered `EntryFn` or `TaskFn`;
    // only its value is used, never called through this type.
    offset_of(unsafe { std::mem::transmute::<usize, EntryFn>(addr) })
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
    ($kind:ident = $module:ident as $ty:ident where $($bound:tt)+) => {
        #[doc(hidden)]
        pub mod $kind {
            use super::super::{Args, Probe, Target};

            pub trait Has {
                fn $kind(&self) -> Option<usize>;
            }
            impl<F: Target<A>, A: Args> Has for Probe<F, A>
            where
                F::Output: $($bound)+,
            {
                fn $kind(&self) -> Option<usize> {
                    let f: crate::spawn::$ty = crate::$module::$kind::<F, A>;
                    Some(f as usize)
                }
            }

            pub trait Lacks {
                fn $kind(&self) -> Option<usize>;
            }
            impl<T> Lacks for &T {
                fn $kind(&self) -> Option<usize> {
                    None
                }
            }
        }
    };
}

/// Declares the entry kinds, and the macro `#[mproc::target]` expands to
/// list a target's entries (`__mproc_entries!`).
macro_rules! entry_kinds {
    ($d:tt; $($kind:ident = $module:ident as $ty:ident where $bound:path;)*) => {
        /// The kinds of entry fn a target may have.
        #[doc(hidden)]
        pub mod kinds {
            $(entry_kind!($kind = $module as $ty where $bound);)*
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

// The entry kinds: adding one is one line here (its fn, generic over
// `<F, A>`, in the module named, of the fn type named; and the kind in
// LAUNCH_KINDS or TASK_KINDS above).
entry_kinds! { $;
    process_entry = spawn as EntryFn where crate::registry::ProcessOutput;
    spawn_entry = spawn as EntryFn where ::serde::Serialize;
    task_entry = pool_worker as TaskFn where ::serde::Serialize;
    init_entry = pool_worker as TaskFn where crate::registry::ProcessOutput;
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
/// [`mproc::spawn`](fn@crate::spawn), whose `join` gives the value.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn not_a_target(_: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn not_an_entry(_: crate::spawn::entry::EntryInput<'_>) -> crate::spawn::entry::ChildOutcome {
        crate::spawn::entry::ChildOutcome {
            exitcode: 0,
            report: None,
        }
    }

    #[test]
    fn offsets_of_unregistered_fns_are_refused() {
        let task = crate::spawn::entry::task_offset(not_a_target);
        assert!(task_at(task).is_none());
        assert!(task_at(0).is_none());
        assert!(entry_at(offset_of(not_an_entry)).is_none());
        assert!(entry_at(task).is_none());
        // The pool worker's own loop is the one internal launch entry; it
        // is not a task runner.
        let worker = offset_of(crate::pool::worker::worker_entry);
        assert!(entry_at(worker).is_some());
        assert!(task_at(worker).is_none());
    }
}
