//! Shared memory mappings.
//!
//! Each backend provides `Mapping` — `anonymous(len)`,
//! `from_handle(owned)` (a mapping another process passed),
//! `create_named(name, len)`, `open_named(name)`, `ptr()`, `len()`,
//! `handle()`; unmapped and closed on drop — and
//! `unlink_named(name)` (POSIX `shm_unlink`; nothing on Windows, where a
//! section lives while a handle is open).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{unlink_named, Mapping};
