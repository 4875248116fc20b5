//! One end of a connection: the OS side of `Connection` and `pipe()`.
//!
//! Each backend provides:
//!
//! - `Stream`, always a byte stream (a Unix or TCP socket; on Windows a
//!   named pipe in byte mode or a TCP socket). Every method takes
//!   `&self`: callers serialise readers and writers themselves, and one
//!   thread may read while another writes.
//!   - `from_owned(handle)`: wraps a handle received from another
//!     process; refuses one that is not a byte stream.
//!   - `handle()`: the OS handle, for polling, `fileno` and passing.
//!   - `read(buf)`, `read_to_spare(vec, max)`: `Ok(0)` is end of file,
//!     and so is a reset connection (after the data still queued).
//!   - `write_frame(header, payload)`: both, completely, without copying
//!     a big payload; a closed peer is `ErrorKind::BrokenPipe`, never a
//!     signal.
//!   - `poll_readable(timeout)`: data or end of file, consuming nothing.
//!   - `ended_unread()`: whether a read saw the peer end with bytes this
//!     end wrote still unread by it (Linux: the reset that reads as end of
//!     file; elsewhere never known, false).
//!   - `close_in_place()`: the peer sees end of file and later I/O
//!     fails; `close_keeps_handle()` says whether the handle value stays
//!     reserved until drop.
//!   - `Read`/`Write` for `&Stream` (the handshake).
//! - `stream_pair()`: two connected ends (CPython's `Pipe()`), both
//!   passable to a child.
//!
//! Shared: [`advance_parts`], a gathered write's progress.

#[cfg(unix)]
pub(in crate::sys) mod unix;
#[cfg(unix)]
pub(in crate::sys) use unix as imp;

#[cfg(windows)]
pub(in crate::sys) mod windows;
#[cfg(windows)]
pub(in crate::sys) use windows as imp;

#[cfg(windows)]
pub(in crate::sys) use imp::{private_pipe_security, wide};
pub use imp::{stream_pair, Stream};

/// A gathered write's progress over `parts`: `index` is the first part
/// not completely written and `offset` how much of it was; moves both on
/// by `written` more bytes (shared by the Unix and Windows stream writers).
pub(crate) fn advance_parts(
    parts: &[&[u8]],
    index: &mut usize,
    offset: &mut usize,
    mut written: usize,
) {
    while *index < parts.len() {
        let rest = parts[*index].len() - *offset;
        if written < rest {
            *offset += written;
            return;
        }
        written -= rest;
        *index += 1;
        *offset = 0;
    }
}
