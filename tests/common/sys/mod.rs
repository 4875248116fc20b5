//! The OS specifics of otherwise cross-platform integration tests, behind
//! platform-neutral functions (the only place in `tests/common/` with a
//! platform `cfg`). A test binary includes it with
//! `#[path = "common/sys/mod.rs"] mod sys;`. Each binary uses only some of
//! these helpers, hence the `dead_code` allowance.

#![allow(dead_code)]

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
