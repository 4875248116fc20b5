//! The platform seam: every OS difference of mproc (both crates) lives
//! here, and nowhere else.
//!
//! One folder per feature, each laid out the same way (as std's
//! `library/std/src/sys` and mio's `src/sys` are):
//!
//! - `mod.rs` holds the feature's contract (the functions and types
//!   each backend provides, with their doc comments), the logic shared by
//!   both backends, and an explicit list of what it re-exports from its
//!   backend;
//! - `unix.rs` and `windows.rs` are the backends, one of which is
//!   compiled, as `imp` (`#[cfg(unix)] use unix as imp;`).
//!
//! Rules of the seam:
//!
//! - Nothing here imports from above it (no `crate::Connection`,
//!   `crate::frame`, nothing of the `mproc` crate): callers pass values or
//!   closures in and get raw OS-level things (handles, streams, exit
//!   codes, `io::Error`s) back.
//! - Platform `cfg`s appear only under this folder (Cargo target tables
//!   excepted); code above calls the platform-neutral functions listed
//!   here.
//! - `tests.rs` is the conformance suite: it runs against whichever
//!   backend it is built for, natively and under Wine.

pub mod control;
pub mod ctor;
pub mod dirs;
pub mod env;
pub mod exit;
pub mod forkserver;
pub mod handles;
pub mod listener;
pub mod parent;
pub mod poll;
pub mod process;
pub mod shm;
pub mod stream;
pub mod sync;

#[cfg(test)]
mod tests;

pub use control::{
    adopt_inherited_channel, channel_ended, cleanup_runtime_dir, connect_control, host_name,
    prepare_runtime_dir, set_read_timeout, set_write_timeout, AcceptFailure, ControlListener,
    ControlStream,
};
pub use dirs::{create_private_dir, make_private, remove_dead_private_dir, remove_private_dir};
pub use env::{prepare_child, scrub_env, secure_exec};
pub use exit::{at_exit, exit_now};
pub use handles::{
    borrow, borrow_raw, check_sendable, duplicate, raw_of, recv_handles, send_handles,
    BorrowedHandle, OwnedHandle, RawHandle,
};
pub use listener::{
    bind_local, bind_tcp, connect_local, connect_tcp, remove_local, unique_local_name, Acceptor,
    LOCAL_SCHEME,
};
pub use parent::{parent_sentinel_for_child, remote_parent_sentinel, ParentSentinel};
pub use poll::{is_local_stream, poll_readable, room_now};
pub use process::{handle_peer, in_a_job_object, ChildProcess, LaunchDeadline, INHERITS_CHANNEL};
pub use shm::{
    check_item, open_item, pooled_object, read_at, recv_freed, seal_bytes, send_freed,
    unlink_named, Mapping, SEALED_ITEMS,
};
pub use stream::{stream_pair, Stream};
pub use sync::{handle_value, import_handle, thread_identity, Access, Acquired, SyncBlock};
