//! Shared memory mappings.
//!
//! Each backend provides `Mapping` — `anonymous(len)`,
//! `from_handle(owned)` (a mapping another process passed),
//! `create_named(name, len)`, `open_named(name)`, `ptr()`, `len()`,
//! `handle()`; unmapped and closed on drop — and
//! `unlink_named(name)` (POSIX `shm_unlink`; nothing on Windows, where a
//! section lives while a handle is open).
//!
//! Sealed items (a large queue item's bytes, out of band): `SEALED_ITEMS`
//! says whether this backend makes them; `seal_bytes(parts)` a fresh
//! memory object holding the `parts` one after the other, that nobody can change any more (Linux:
//! a memfd with `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK |
//! F_SEAL_SEAL`); `read_at(handle, offset, len)` bytes of an object,
//! read (`pread`: never `SIGBUS`, a kernel copy).
//!
//! Reusable item objects (a producer's pool, `queue/large.rs`):
//! `pooled_object(size)` a fresh object whose size is sealed but not its
//! contents (its maker maps it to write items into it), and its identity;
//! `check_item(handle, len)` checks a peer's descriptor is
//! either kind of item object (an [`ItemObject`]); `open_item(pid, n)`
//! opens another process's descriptor read-only; `send_freed(socket, id)`
//! and `recv_freed(socket, out)` carry "object `id` is free again"
//! notices (8 bytes each, never waiting).
//!
//! Windows has none yet (`Unsupported`): large items travel inline there.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{
    check_item, open_item, pooled_object, read_at, recv_freed, seal_bytes, send_freed,
    unlink_named, Mapping, SEALED_ITEMS,
};

/// What [`check_item`] found a peer's item object to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemObject {
    /// A reusable object (its maker writes it again once told it is free),
    /// rather than one sealed for good.
    pub reused: bool,
    /// Its identity while it lives (the inode number on Linux).
    pub id: u64,
}
