//! Process-shared synchronisation: a block of robust mutexes, a bell and
//! data that several processes map.
//!
//! Each backend provides `SyncBlock` (`create(mutexes, data_len)`,
//! `from_handles(..)`, `handles()`, `data()`,
//! `lock(i, deadline)`, `try_lock(i)`, `unlock(i)`, `bell()`,
//! `wait(seen, deadline)`, `ring()`), `Acquired` (whether a lock was
//! taken over from a process that died holding it), `thread_identity()`
//! (a number unique to this thread in this process), and, to pass a
//! handle by value where no stream carries it, `handle_value(borrowed)`
//! and `import_handle(pid, value)`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{handle_value, import_handle, thread_identity, Acquired, SyncBlock};
