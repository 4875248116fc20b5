//! # mproc — Python's `multiprocessing` for Rust
//!
//! Register target functions with [`#[mproc::target]`](macro@target), make
//! `main` the entry with [`#[mproc::main]`](macro@main), and start processes
//! the way CPython does: [`Process`], [`spawn`](fn@spawn), [`Queue`], [`pipe`].
//! The child is this same binary, re-executed with a hidden entry token
//! that a life-before-main constructor catches: the child runs the target
//! and exits, and the program's `main` never runs there.
//!
//! ```
//! use mproc::Process;
//!
//! #[mproc::target]
//! fn worker(task: String) {
//!     println!("Worker PID: {} with task: {task}", std::process::id());
//! }
//!
//! #[mproc::main]
//! fn main() -> mproc::Result<()> {
//!     let mut p = Process::new(worker, ("running 0 task".to_string(),));
//!     p.start()?;
//!     p.join()?;
//!     assert_eq!(p.exitcode(), Some(0));
//!     Ok(())
//! }
//! ```
//!
//! The [guide] maps every Python name to its Rust name.

mod context;
mod fault;
mod forkserver;
pub mod guide;
mod join_handle;
mod logging;
mod pool;
/// The pool worker's task runners, where the registry's entry kinds find them.
pub(crate) use pool::worker as pool_worker;
mod process;
mod registry;
mod remote;
mod spawn;
mod start_method;
/// The OS layer, in `mproc-ipc` (one seam for both crates).
use mproc_ipc::__private::sys;

pub use join_handle::{spawn, JoinHandle};
pub use logging::{log_to_stderr, set_child_initializer};
/// Used by `#[mproc::target]` (see `mproc_ipc`'s `sys/ctor`).
#[doc(hidden)]
pub use mproc_ipc::__mproc_early_ctor;
pub use mproc_ipc::{
    pipe, wait, Address, BootstrapError, Client, Connection, DecodeError, EncodeError, Error,
    JoinableQueue, Listener, PutError, Queue, Result, SimpleQueue, Waitable,
};
pub use mproc_ipc::{
    Array, ArrayGuard, Barrier, BoundedSemaphore, CondGuard, Condition, Event, Lock, LockGuard,
    RLock, Semaphore, SharedMemory, Value, ValueGuard,
};
pub use pool::{AsyncResult, Pool, PoolBuilder};
pub use process::{
    active_children, cpu_count, current_process, parent_process, Process, ProcessInfo, Sentinel,
};
pub use registry::{Args, ProcessOutput, Target};
pub use remote::Launcher;
pub use spawn::record::BOOTSTRAP_EXIT_CODE;
pub use start_method::{get_context, get_start_method, set_start_method, Context, StartMethod};

/// Registers a free fn (0 to 6 parameters of serde types, or connection
/// and queue handles) as a process target. The fn stays an ordinary fn.
///
/// A target cannot be generic or async. For Python's keyword arguments,
/// take one `#[derive(Serialize, Deserialize)]` struct.
pub use mproc_macros::target;

/// Makes `main` mproc's entry: runs [`init`] first and the exit procedure
/// (terminate daemonic children, join the others) after its body. After a
/// panic or an `Err` the others are still joined, as in CPython; each one
/// still running is first named on stderr.
pub use mproc_macros::main;

/// A `#[test]` that may start processes. Composes with `#[ignore]`,
/// `#[should_panic]` and a `-> Result<(), E>` return, like `#[test]`.
///
/// A test that panics or returns `Err` terminates the children its thread
/// started and that still run, each named on stderr, so that the test
/// binary ends and reports the failure (see the guide, "At exit after a
/// failure"); a test that passes leaves them to the exit procedure.
pub use mproc_macros::test;

/// Marks this process as an mproc program and makes the exit procedure
/// (terminate daemonic children, join the others) run when it exits.
///
/// Children never reach it: a constructor that runs before `main` catches
/// the entry token, so code before `init()` does *not* run in children
/// either (unlike CPython's `if __name__ == "__main__"` guard, nothing
/// needs guarding). Calling it more than once is harmless.
pub fn init() {
    // In the unlikely case the constructor did not run (a platform without
    // life-before-main support), become the child here.
    spawn::child::boot();
    if context::mark_initialised() {
        let _ = context::current();
        spawn::exit::install_exit_hook();
    }
}

pub(crate) use mproc_ipc::__private::hex::{hex, unhex};

#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{kinds, type_id_of, Entries, Probe, Registration, TargetEntry};
    pub use crate::spawn::exit::exit_procedure;
    pub use crate::spawn::scope::{MainScope, Outcome, ReturnedAnything, ReturnedErr, TestScope};
}
