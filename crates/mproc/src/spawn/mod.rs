//! The life of a spawn, in one place: the parent's side, the child's
//! side, and the exit procedure. The files, in the order a spawn goes
//! through them (docs/architecture.md, "The life of a spawn", tells the
//! same story with the OS details):
//!
//! 1. `prepare.rs`, parent: the target is registered, its entry fn is
//!    taken from the registry, the arguments are encoded and the OS
//!    handles they carry collected ([`prepare::Prepared`]).
//! 2. `parent.rs`, parent, in `start()`: [`parent::start_child`] waits
//!    for a place among the launches in flight (`threads.rs`), and
//!    [`parent::begin`] starts the process with the entry token (through
//!    the [`Launcher`] and the start method, outside this module): a
//!    local re-exec hands the child one end of a socket pair and sends a
//!    small launch record into it at once; any other launch binds a
//!    one-shot control listener first. The child joins the children
//!    table (`exit.rs`) as a [`started::ChildState`], and `start()`
//!    returns.
//! 3. `child.rs`, child, before `main`: the constructor finds the token,
//!    takes its inherited channel (or connects and proves the secret),
//!    reads its launch record and handles
//!    (`record.rs`), turns the entry's offset (`entry.rs`) into a fn the
//!    registry vouches for, decodes its arguments and acknowledges.
//! 4. `parent.rs`, on a launcher thread (`threads.rs`):
//!    [`parent::Begun::finish`] (on a named channel: accepts the child and
//!    checks the secret both ways) sends the record and handles unless
//!    `start()` did, closes its copies of the
//!    handles, gives the go-ahead and reads the acknowledgement. Its
//!    outcome goes to the child's `ChildState` (`started.rs`): the control
//!    channel, or a [`failure::LaunchFailure`] that every `join` reports
//!    as `Error::ChildFailed`.
//! 5. `child.rs`: the target runs; a `spawn`ed child sends its `Report`
//!    (`record.rs`); the child runs its own exit procedure (`exit.rs`)
//!    and exits.
//! 6. parent: `join` waits for the child and forgets it (`exit.rs`); at
//!    exit the exit procedure terminates the daemonic children left and
//!    joins the others. A `#[mproc::test]` that fails terminates the
//!    children it started instead (`scope.rs`, `failed.rs`).
//!
//! `step.rs` is step 2 and 4 for a job step of n remote tasks at once (a
//! remote `Pool`'s workers): one `srun`, n launches over its listener.
//!
//! # Dependencies
//!
//! One way: a file uses only files of a lower layer (`use super::…`).
//! The two sides, `parent` and `child`, share `entry`, `record` and
//! `exit` and never import each other:
//!
//! ```text
//!   3   step ──► parent, failure, record
//!   2   parent ──► prepare, threads, exit, scope, entry, started, record, failure
//!       child  ──► exit, entry, record
//!       scope  ──► exit, failed, started
//!   1   prepare ──► entry        exit ──► started, failed        threads
//!   ½   failed ──► started
//!   0   entry ──► record         started ──► failure
//!   -   record                   failure
//! ```
//!
//! Outside the module, `parent` uses the [`Launcher`] (where the process
//! starts), and through it the start method; the forkserver start method
//! (`forkserver.rs`) starts its server with [`parent::begin`] and has its
//! forked children run [`child::become_child`]. That one loop (a launch
//! whose start method launches a server) is a recursion at run time, and
//! the forkserver stays outside this module as a start method beside
//! `start_method.rs` and `remote.rs`.
//!
//! # What stays outside
//!
//! The user-facing handles are built on this module and live beside it:
//! `process.rs` (`Process`, `ProcessInfo`, `active_children`, ...) and
//! `join_handle.rs` (`spawn`, `JoinHandle`), as `pool/` does for `Pool`.
//! They hold a `ChildState` and call [`parent::start_child`]; nothing
//! here depends on them, so a reader of the life cycle meets no public
//! API, and a reader of the API no protocol.
//!
//! [`Launcher`]: crate::Launcher

pub(crate) mod child;
pub(crate) mod entry;
pub(crate) mod exit;
pub(crate) mod failed;
pub(crate) mod failure;
pub(crate) mod parent;
pub(crate) mod prepare;
pub(crate) mod record;
pub(crate) mod scope;
pub(crate) mod started;
pub(crate) mod step;
pub(crate) mod threads;

// The registry's entry kinds name their fn types and entry fns here
// (`registry.rs`, `entry_kinds!`).
pub(crate) use child::{process_entry, spawn_entry};
pub(crate) use entry::{EntryFn, TaskFn};
