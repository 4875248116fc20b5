//! `mproc-ipc`: the inter-process pieces of mproc — CPython-compatible
//! framing, authentication, typed messages, connections, pipes and queues.
//!
//! Users normally reach these through the `mproc` crate, which re-exports
//! them; see its documentation and `mproc::guide` (`crates/mproc/guide.md`).

#![warn(missing_docs)]

pub mod auth;
mod connection;
mod depth;
mod error;
pub mod frame;
pub mod handles;
mod listener;
mod queue;
mod sync;
pub mod sys;
pub mod tag;
mod wait;

pub use connection::{pipe, Connection};
/// postcard decoding that keeps a `Deserialize` impl's error text (for
/// `mproc`'s child results and pool tasks).
#[doc(hidden)]
pub use depth::from_bytes as decode_from_slice;
/// postcard encoding that keeps a `Serialize` impl's error text (for
/// `mproc`'s launch and pool arguments).
#[doc(hidden)]
pub use error::to_vec as encode_to_vec;
pub use error::{BootstrapError, DecodeError, EncodeError, Error, PutError, Result};
pub use listener::{Address, Client, Listener};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use sync::{
    Array, ArrayGuard, Barrier, BoundedSemaphore, CondGuard, Condition, Event, Lock, LockGuard,
    RLock, Semaphore, SharedMemory, Value, ValueGuard,
};
pub use wait::{wait, Waitable};
