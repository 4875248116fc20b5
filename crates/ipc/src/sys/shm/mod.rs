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
//! says whether this backend makes them; `seal_bytes(bytes)` a fresh
//! memory object holding `bytes` that nobody can change any more (Linux:
//! a memfd with `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK |
//! F_SEAL_SEAL`); `check_sealed(handle, len)` that a handle from a peer
//! is one, of exactly `len` bytes (`ErrorKind::InvalidData` otherwise);
//! `read_sealed(handle, len)` its bytes, read (`pread`: never `SIGBUS`);
//! `map_sealed(handle, len)` a `SealedView` of them, mapped read-only
//! after the same checks (a sealed object cannot shrink: no `SIGBUS`).
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
    check_sealed, map_sealed, read_sealed, seal_bytes, unlink_named, Mapping, SealedView,
    SEALED_ITEMS,
};
