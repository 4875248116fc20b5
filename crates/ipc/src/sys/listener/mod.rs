//! Listening and connecting: the OS side of `Listener` and `Client`.
//!
//! Each backend provides:
//!
//! - `Acceptor`, a listening endpoint: `accept()` waits for one
//!   connection (a [`Stream`](super::stream::Stream));
//!   `close_in_place()` stops listening and wakes a blocked `accept`.
//! - `bind_local(path)` (fails if the name is taken), `bind_tcp(addr)`
//!   (returns the bound address), `connect_local(path)`,
//!   `connect_tcp(addr)` (Nagle off).
//! - `LOCAL_SCHEME` (`unix` or `pipe`, the text before a local address),
//!   `unique_local_name()` (a fresh, unused local name) and
//!   `remove_local(path)` (removes a closed listener's name, if it has
//!   one).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{
    bind_local, bind_tcp, connect_local, connect_tcp, remove_local, unique_local_name, Acceptor,
    LOCAL_SCHEME,
};
