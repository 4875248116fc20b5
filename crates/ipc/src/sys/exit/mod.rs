//! Work at normal process exit.
//!
//! Each backend provides `at_exit(hook) -> bool`: registers an
//! `extern "C" fn()` (which must not unwind) to run when the process
//! exits normally (`main` returning or `std::process::exit`), while every
//! thread is still alive, in reverse order of registration; returns
//! whether it was registered. Unix uses the C library's `atexit`; Windows
//! hooks `ExitProcess` in this module's import table.
//!
//! And `exit_now(code) -> !`: ends this process at once, without exit
//! handlers.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{at_exit, exit_now};
