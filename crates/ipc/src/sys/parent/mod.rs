//! The parent link: how a child learns that its parent is gone, however
//! the parent died.
//!
//! Each backend provides `parent_sentinel_for_child()` (the handle the
//! parent gives each child), `ParentSentinel` (the child's view:
//! `from_handle(handle, parent_pid)`, `wait(timeout)` is true once the
//! parent is gone) and `remote_parent_sentinel()` (a sentinel that is
//! never ready, for a child on another host; Unix only).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{parent_sentinel_for_child, remote_parent_sentinel, ParentSentinel};
