//! Private directories for local sockets.
//!
//! Each backend provides `create_private_dir(path)` (a directory only
//! this user may enter, marked as alive for this process's whole life),
//! `remove_private_dir(path)` (one this process made),
//! `remove_dead_private_dir(path)` (another process's, once it is gone)
//! and `make_private(path)` (a socket file only this user may open). On
//! Windows local names are pipes, which carry their own access rules:
//! these are plain directory operations there.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

#[cfg(unix)]
pub(in crate::sys) use imp::owner_is_gone;
pub use imp::{create_private_dir, make_private, remove_dead_private_dir, remove_private_dir};
