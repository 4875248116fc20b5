//! The forkserver start method's OS side (CPython's `forkserver`).
//!
//! Each backend provides `SUPPORTED` (whether this OS has it: Unix yes,
//! Windows no), `Channel` (the parent's end of the server's request
//! channel), `channel()` (both ends: the parent's, and the server's, which
//! the server receives at its launch), `request(channel, token)` (the
//! parent asks the server to fork a child that becomes the process the
//! entry token names: the outer error is a broken channel, the inner one
//! a fork the server could not make) and `serve(channel, become_child)`
//! (the server's loop, until the parent is gone; `become_child(token)`
//! runs in each forked child; returns the server's exit code).

#[cfg(unix)]
pub(in crate::sys) mod unix;
#[cfg(unix)]
pub(in crate::sys) use unix as imp;

#[cfg(windows)]
pub(in crate::sys) mod windows;
#[cfg(windows)]
pub(in crate::sys) use windows as imp;

pub use imp::{channel, request, serve, Channel, SUPPORTED};
