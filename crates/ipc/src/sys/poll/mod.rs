//! Waiting for readiness.
//!
//! Each backend provides `poll_readable(handles, timeout) -> indices`:
//! waits until one of `handles` is ready — data or end of file on a
//! stream, a listener with a pending connection, an ended process's
//! sentinel, a closed pipe's read end — and returns the indices of the
//! ready ones, in order; empty on timeout (`None` waits forever,
//! `Some(ZERO)` only looks). Never consumes anything.
//!
//! And `is_local_stream(handle) -> bool` (asked once per connection),
//! then `room_now(handle, len) -> bool`: whether `len` bytes can be
//! written to this local stream socket right now without blocking, even
//! if its peer reads nothing (a queue broker answers a parked request
//! from another thread only then; false whenever it cannot be sure:
//! not a local socket, or on Windows, where named pipes say nothing of
//! the sort). And `WAITS_ON_STREAMS`: whether `poll_readable` sleeps in
//! the kernel on streams (true with `poll(2)`; false on Windows, where a
//! set with a pipe is polled with a back-off).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

#[cfg(windows)]
pub(in crate::sys) use imp::wait_millis;
pub use imp::{is_local_stream, poll_readable, room_now, WAITS_ON_STREAMS};
