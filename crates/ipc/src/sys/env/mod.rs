//! A child's process-wide set-up and the entry token in its environment.
//!
//! Each backend provides `prepare_child()` (settings a child needs before
//! its target runs: on Unix, SIGPIPE ignored), `secure_exec()` (whether
//! the kernel started this process in secure mode: set-user-ID and the
//! like; never on Windows) and `scrub_env(name)` (removes a variable,
//! and on Linux wipes its bytes from the initial environment block; must
//! run before any other thread exists).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{prepare_child, scrub_env, secure_exec};
