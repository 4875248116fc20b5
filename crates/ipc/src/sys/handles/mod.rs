//! OS handles and passing them to another process.
//!
//! Each backend provides:
//!
//! - `OwnedHandle`, `BorrowedHandle<'a>`, `RawHandle`: std's types
//!   (`OwnedFd`/`BorrowedFd`/`RawFd` on Unix, `OwnedHandle`/
//!   `BorrowedHandle`/`RawHandle` on Windows).
//! - `borrow(&impl AsFd/AsHandle)`, `unsafe borrow_raw(raw)`,
//!   `raw_of(borrowed)`: conversions.
//! - `duplicate(borrowed) -> OwnedHandle`: a new, non-inheritable handle
//!   to the same object (a socket stays a usable socket).
//! - `Peer`: where handles are sent (`Peer::current()` is this process);
//!   `send_handles(stream, handles, peer)` and `recv_handles(stream, n)`:
//!   the receiver gets `n` owned handles to the same objects, in order.
//!   Unix sends them over the socket itself (SCM_RIGHTS); Windows
//!   duplicates them into the peer and sends their values.
//! - `check_sendable(handles)`: whether `send_handles` can pass these
//!   (Windows cannot pass sockets), so a launch refuses before it starts.
//! - `__impl_as_handle!(Type, |s| body)`: `AsFd`+`AsRawFd` or
//!   `AsHandle`+`AsRawHandle` for a type above the seam.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{
    borrow, borrow_raw, check_sendable, duplicate, raw_of, recv_handles, send_handles,
    BorrowedHandle, OwnedHandle, Peer, RawHandle,
};
