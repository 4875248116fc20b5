//! Process-shared synchronisation: a block of robust mutexes, a bell and
//! data that several processes map.
//!
//! Each backend provides `SyncBlock` (`create(mutexes, data_len)`,
//! `from_handles(..)`, `handles()`, `data()`,
//! `lock(i, deadline)`, `try_lock(i)`, `unlock(i)`, `bell()`,
//! `wait(seen, deadline)`, `ring()`), `thread_identity()` (a number
//! unique to this thread in this process), and, to pass a handle by value
//! where no stream carries it, `handle_value(borrowed)` and
//! `import_handle(pid, value, access)` (with the least [`Access`] its
//! caller needs). Shared here: [`Acquired`] (whether a lock
//! was taken over from a process that died holding it) and the block's
//! header (magic and layout word), written at creation and checked on
//! arrival.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{handle_value, import_handle, thread_identity, SyncBlock};

/// What an imported handle may do: each caller of `import_handle` asks
/// for the least it needs, so that a mistake (or a hostile value naming
/// another object) cannot write what was meant to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only (Unix: `O_RDONLY`; Windows: a section's `FILE_MAP_READ`):
    /// neither writable nor mappable for writing. (Its one user, a sealed
    /// Queue item, is not on Windows yet.)
    #[cfg_attr(windows, allow(dead_code))]
    Read,
    /// Read and write (Unix: `O_RDWR`; Windows: the holder's own access),
    /// what a shared page written by both sides or a lock needs.
    ReadWrite,
}

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::shm::Mapping;

/// The first word of every block's header.
const MAGIC: u64 = u64::from_le_bytes(*b"mprocSB1");
/// The header's size: the magic, the layout word, the bell's words.
const HEADER: usize = 64;

/// The outcome of taking a robust mutex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Taken; the previous holder released it.
    Clean,
    /// Taken; the previous holder died holding it.
    OwnerDied,
    /// Not taken: busy (try) or the deadline passed.
    No,
}

/// Header word `i` of the block in `map`: 0 the magic, 1 the layout.
fn header_word(map: &Mapping, i: usize) -> &AtomicU64 {
    debug_assert!(i < 2);
    // SAFETY: the header's first 16 B, inside every block's mapping (at
    // least `HEADER` bytes), 8-aligned (the mapping is page-aligned).
    unsafe { &*map.ptr().add(i * 8).cast::<AtomicU64>() }
}

/// The layout word: the number of mutexes and the data's length.
fn layout_word(mutexes: usize, data_len: usize) -> u64 {
    ((mutexes as u64) << 32) | data_len as u64
}

/// Marks a new block's header with the magic and its layout.
fn write_header(map: &Mapping, mutexes: usize, data_len: usize) {
    header_word(map, 0).store(MAGIC, Ordering::Release);
    header_word(map, 1).store(layout_word(mutexes, data_len), Ordering::Release);
}

/// Checks a received mapping against the layout its sender announced: at
/// least `total` bytes, and a header saying the same (a short or foreign
/// mapping is an error, never an out-of-bounds access).
fn check_received(map: &Mapping, total: usize, mutexes: usize, data_len: usize) -> io::Result<()> {
    if map.len() < total || mutexes > u32::MAX as usize || data_len > u32::MAX as usize {
        return Err(bad("shared object mapping is too small"));
    }
    if header_word(map, 0).load(Ordering::Acquire) != MAGIC
        || header_word(map, 1).load(Ordering::Acquire) != layout_word(mutexes, data_len)
    {
        return Err(bad("not an mproc shared object (bad header)"));
    }
    Ok(())
}

/// The error for received handles that are not the announced block.
fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}
