//! Waiting for readiness.
//!
//! Each backend provides `poll_readable(handles, timeout) -> indices`:
//! waits until one of `handles` is ready — data or end of file on a
//! stream, a listener with a pending connection, an ended process's
//! sentinel, a closed pipe's read end — and returns the indices of the
//! ready ones, in order; empty on timeout (`None` waits forever,
//! `Some(ZERO)` only looks). Never consumes anything.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::poll_readable;
#[cfg(windows)]
pub(in crate::sys) use imp::wait_millis;
