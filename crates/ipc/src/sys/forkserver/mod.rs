//! The forkserver start method's OS side (CPython's `forkserver`).
//!
//! Each backend provides `SUPPORTED` (whether this OS has it: Unix yes,
//! Windows no), `Channel` (the parent's end of the server's request
//! channel), `channel()` (both ends: the parent's, and the server's, which
//! the server receives at its launch), `control_pair()` (a forked child's
//! control channel: the parent's end and the child's), `CHANNEL_AT` (where
//! the forked child finds its end: its entry token names it),
//! `request(channel, token, child_end)` (the parent asks the server to
//! fork a child that becomes the process the entry token names, holding
//! `child_end`: the outer error is a broken channel, the inner one a fork
//! the server could not make) and `serve(channel, become_child)`
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

pub use imp::{channel, control_pair, request, serve, Channel, CHANNEL_AT, SUPPORTED};
