//! The launch's control channel: a one-shot listener the parent makes
//! for one child, which connects to it from its entry.
//!
//! Each backend provides:
//!
//! - `ControlStream`: the channel's stream (a `UnixStream`, or a `File`
//!   on a named pipe), `Read + Write`, convertible into an
//!   [`OwnedHandle`](super::handles::OwnedHandle);
//!   `set_read_timeout(stream, timeout)` (nothing on Windows, where
//!   [`LaunchDeadline`](super::process::LaunchDeadline) bounds a launch).
//! - `ControlListener`: `bind()` (local, only this user may connect),
//!   `bind_tcp(advertise)` (for a child on another host; Unix only),
//!   `address()` (what goes into the child's entry token) and
//!   `accept(child, deadline)`, which races the child's exit and the
//!   deadline and refuses, before a byte is read, a local peer whose
//!   process is not `child` (where the OS names the peer).
//! - `AcceptFailure`: why no connection arrived.
//! - `connect_control(address)`: the child's side.
//! - `adopt_inherited_channel(value)`: the child's side of a channel it
//!   inherited (`ChildProcess::spawn_inheriting`): checks the descriptor
//!   the token names is the parent's channel and makes it close-on-exec.
//! - `set_write_timeout(stream, timeout)` (nothing on Windows).
//! - `channel_ended(error)`: whether a failed read or write on the
//!   stream means the peer is gone, as an end of file does.
//! - `prepare_runtime_dir()`: makes this process's private directory
//!   now (sweeping dead processes' ones), as the first launch does.
//! - `cleanup_runtime_dir()`: removes this process's private directory
//!   of control sockets (at exit).
//! - `host_name()`: this host's name, as another host reaches it.

#[cfg(unix)]
pub(in crate::sys) mod unix;
#[cfg(unix)]
pub(in crate::sys) use unix as imp;

#[cfg(windows)]
pub(in crate::sys) mod windows;
#[cfg(windows)]
pub(in crate::sys) use windows as imp;

pub use imp::{
    adopt_inherited_channel, channel_ended, cleanup_runtime_dir, connect_control, host_name,
    prepare_runtime_dir, set_read_timeout, set_write_timeout, AcceptFailure, ControlListener,
    ControlStream,
};
