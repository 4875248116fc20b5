//! `mproc-ipc`: the inter-process pieces of mproc — CPython-compatible
//! framing, authentication, typed messages, connections, pipes and queues.
//!
//! Users normally reach these through the `mproc` crate, which re-exports
//! them; see its documentation and `mproc::guide` (`crates/mproc/guide.md`).

mod auth;
mod connection;
mod decode;
mod encode;
mod error;
mod frame;
mod handles;
mod listener;
mod queue;
mod sync;
mod sys;
mod tag;
mod util;
mod wait;

pub use connection::{pipe, Connection};
/// postcard decoding that keeps a `Deserialize` impl's error text (for
/// `mproc`'s child results and pool tasks).
#[doc(hidden)]
pub use decode::from_bytes as decode_from_slice;
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

/// What `mproc`, the test suites and the fuzz targets use of this crate's
/// internals: not part of its API, no semver promise; may change in any
/// release. Every item is listed by name.
#[doc(hidden)]
pub mod __private {
    /// Poison-tolerant locking (one policy for both crates).
    pub mod lock {
        pub use crate::util::lock::{lock, read, wait, wait_timeout, write};
    }

    /// Lower-case hex.
    pub mod hex {
        pub use crate::util::hex::{hex, unhex};
    }

    /// CPython's authkey handshake (`multiprocessing.connection`'s).
    pub mod auth {
        pub use crate::auth::{
            answer_challenge, client_handshake, deliver_challenge, server_handshake,
        };
    }

    /// CPython's frames: a 4-byte big-endian length (or -1 and 8 bytes),
    /// then the payload.
    pub mod frame {
        pub use crate::frame::{
            encode_header, read_frame, read_header, read_payload, write_frame, write_frame_parts,
            DEFAULT_MAX_MESSAGE,
        };
    }

    /// Connection internals.
    pub mod connection {
        pub use crate::connection::ended_unread;
    }

    /// Handles carried inside messages.
    pub mod handles {
        pub use crate::handles::{collect_outgoing, encode_for_remote, with_incoming};
    }

    /// The OS layer (`sys/`): one folder per feature.
    pub mod sys {
        pub use crate::sys::forkserver;
        pub use crate::sys::{
            at_exit, borrow, borrow_raw, channel_ended, check_sendable, cleanup_runtime_dir,
            connect_control, duplicate, exit_now, handle_peer, host_name,
            parent_sentinel_for_child, prepare_child, raw_of, recv_handles, remote_parent_sentinel,
            scrub_env, secure_exec, send_handles, set_read_timeout, AcceptFailure, BorrowedHandle,
            ChildProcess, ControlListener, ControlStream, LaunchDeadline, OwnedHandle,
            ParentSentinel, RawHandle, Stream,
        };
        // The inherited launch channel (`ChildProcess::spawn_inheriting`).
        pub use crate::sys::{
            adopt_inherited_channel, prepare_runtime_dir, set_write_timeout, INHERITS_CHANNEL,
        };
        // Whether a daemonic child is in its Job Object (the test fault
        // `outside-job`).
        pub use crate::sys::in_a_job_object;
    }

    /// Typed messages: the tag before a typed payload.
    pub mod tag {
        pub use crate::tag::{
            body, decode, encode, encode_tag, fingerprint_of, is_typed, sender_type_name, MAGIC,
        };
    }

    /// `AsFd`/`AsRawFd` (Unix) or `AsHandle`/`AsRawHandle` (Windows) for a
    /// type above the seam.
    pub use crate::__impl_as_handle as impl_as_handle;
}
