//! The one error type users see: `mproc::Error` (re-exported by `mproc`).
//!
//! Each CPython error case is its own variant and its `Display` carries
//! CPython's wording, so a Python user recognises the message.
//!
//! Three variants carry a cause: [`EncodeError`], [`DecodeError`] and
//! [`BootstrapError`]. Their `Display` tells the whole story (CPython shows
//! the pickling error's own text, so does mproc: a serde impl's
//! `Error::custom` text survives postcard, see [`capture`]), and
//! `std::error::Error::source` hands the underlying typed error (an
//! `io::Error`, postcard's error, ...) to code that inspects it.

mod capture;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use capture::to_vec;

/// `Result<T, mproc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error mproc reports.
///
/// `Display` is the message for people (CPython's wording); `Debug` is
/// derived, for developers (a `main` returning `mproc::Result` prints it:
/// print `{e}` yourself for the message alone). The causes of
/// [`Encode`](Error::Encode), [`Decode`](Error::Decode) and
/// [`Bootstrap`](Error::Bootstrap) are reachable with
/// [`source()`](std::error::Error::source).
///
/// Match a variant for one case, or ask a kind helper for a family of
/// them, as crossbeam's errors do: [`is_disconnected`](Error::is_disconnected),
/// [`is_eof`](Error::is_eof), [`is_timeout`](Error::is_timeout),
/// [`is_closed`](Error::is_closed), [`is_type_mismatch`](Error::is_type_mismatch),
/// [`is_auth`](Error::is_auth).
///
/// ```
/// let (a, b) = mproc_ipc::pipe(true)?;
/// drop(a);
/// let err = b.recv::<u32>().unwrap_err();
/// assert!(err.is_eof() && err.is_disconnected());
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- Process life cycle (CPython's ValueError / AssertionError) ----
    /// `Process::start` on a process that was already started (or run).
    #[error("cannot start a process twice")]
    StartedTwice,
    /// `Process::start`, `join`, `join_timeout`, `terminate`, `kill`,
    /// `is_alive` or `sentinel` after `Process::close`.
    #[error("process object is closed")]
    ProcessClosed,
    /// `Process::join` / `join_timeout` before `start()`.
    #[error("can only join a started process")]
    JoinNotStarted,
    /// `Process::sentinel`, `terminate` or `kill` before `start()`.
    #[error("process not started")]
    NotStarted,
    /// `Process::set_daemon` after `start()`.
    #[error("process has already started")]
    AlreadyStarted,
    /// `Process::start`, `mproc::spawn` or a `Pool`'s worker start from a
    /// daemonic process.
    #[error("daemonic processes are not allowed to have children")]
    DaemonicChildren,
    /// `Process::close` while the child still runs.
    #[error("Cannot close a process while it is still running. You should first call join() or terminate().")]
    CloseRunning,
    /// `Process::run` on a process that was started, or run already.
    #[error("run() needs a process that was never started nor run")]
    RunAfterStart,
    /// The target fn was not registered with `#[mproc::target]`:
    /// `Process::start`/`run`, `mproc::spawn`, a `Pool` task or
    /// initializer, `set_child_initializer`.
    #[error("target `{name}` is not registered: add #[mproc::target] to `fn {short}`")]
    UnregisteredTarget {
        /// The fn's full path.
        name: String,
        /// The fn's own name.
        short: String,
    },
    /// A closure was passed where a target fn goes: a child cannot find a
    /// closure (it has no name in the executable), only a free fn
    /// registered with `#[mproc::target]`. From `Process::start`/`run`
    /// and `mproc::spawn`.
    #[error("closures cannot be targets: `{name}` is a closure; move its body into a free fn marked #[mproc::target] and pass that fn")]
    ClosureTarget {
        /// The closure's type name.
        name: String,
    },
    /// `Process::start` / `mproc::spawn` in a child process that did not
    /// go through mproc's entry.
    #[error("refusing to spawn from a child process that skipped mproc's entry (fork-bomb guard): add #[mproc::main] to main, or call mproc::init() as its first line")]
    ForkBomb,
    /// The child died or gave up before running its target:
    /// `Process::start`, `mproc::spawn`, `Pool::new` (a worker's launch).
    #[error("child process {pid} failed to start ({status}): {reason}")]
    ChildFailed {
        /// The child's pid.
        pid: u32,
        /// How it ended, e.g. "exit status: 3" or "still running".
        status: String,
        /// What went wrong.
        reason: String,
    },
    /// The child ended without reporting a result (killed, `exit(n)`,
    /// ...): `JoinHandle::join`.
    #[error("process {name} (pid {pid}) ended without a result (exitcode {exitcode})")]
    NoResult {
        /// The child's name (`Process-1`, or the one it was given).
        name: String,
        /// The child's pid.
        pid: u32,
        /// Its CPython-style exit code.
        exitcode: i32,
    },
    /// The target panicked in the child: `JoinHandle::join`, and a `Pool`
    /// task's `apply`/`map*`/`AsyncResult::get`.
    #[error("process {name} (pid {pid}) panicked at {location}: {message}")]
    Panicked {
        /// The child's name (`Process-1`, or the one it was given).
        name: String,
        /// The child's pid.
        pid: u32,
        /// The panic payload, as text.
        message: String,
        /// `file:line:column` of the panic.
        location: String,
    },
    /// The target returned `Err(e)`; holds `e` as text: `Process::run`, a
    /// `Pool` task's `apply`/`map*`/`AsyncResult::get`.
    #[error("target returned an error: {0}")]
    TargetError(String),
    /// A launch step failed (in the parent or the child), with its cause
    /// (an OS error, a refused option): `Process::start`, `mproc::spawn`,
    /// `Pool::new` and its worker replacements, `Launcher::srun` launches.
    #[error("bootstrap failed: {0}")]
    Bootstrap(#[from] BootstrapError),
    /// What this platform cannot do, with the reason:
    /// `set_start_method` and `get_context` with
    /// `StartMethod::Forkserver` on Windows.
    #[error("unsupported on this platform: {0}")]
    Unsupported(String),
    /// `set_start_method` once a process was started (CPython's
    /// `RuntimeError: context has already been set`).
    #[error("context has already been set")]
    ContextAlreadySet,

    // ---- Pool (CPython's ValueError / multiprocessing.TimeoutError) ----
    /// `Pool::new(0)` (or a builder's `build()` with `processes(0)`).
    #[error("Number of processes must be at least 1")]
    PoolSize,
    /// A pool builder's `build()` with `maxtasksperchild(0)`.
    #[error("maxtasksperchild must be a positive int or None")]
    PoolMaxTasks,
    /// A chunk size of 0 given to a pool's `*_chunked` method.
    #[error("Chunksize must be 1+, not 0")]
    PoolChunksize,
    /// A task submitted (`apply*`, `map*`, `imap*`, `starmap*`) after
    /// `Pool::close` or `terminate`.
    #[error("Pool not running")]
    PoolNotRunning,
    /// `Pool::join()` before `close()` or `terminate()`.
    #[error("Pool is still running")]
    PoolStillRunning,
    /// The pool was terminated (or dropped) before this task completed:
    /// that task's `AsyncResult::get*`, `apply`, `map*`.
    #[error("the pool was terminated before this task completed")]
    PoolTerminated,
    /// A pool worker could not start (its launch or its initializer
    /// failed): the pool runs no more tasks. Every task's result, and
    /// `apply*`/`map*` from then on.
    #[error("the pool cannot run tasks: {0}")]
    PoolBroken(String),
    /// The pool worker running this task died (killed, aborted,
    /// `std::process::exit`, out of memory) before reporting its result:
    /// that task's `apply`/`map*`/`AsyncResult::get`.
    #[error("worker process {pid} died (exit code {exitcode}) while running this task")]
    WorkerDied {
        /// The worker's pid.
        pid: u32,
        /// Its CPython-style exit code (-9 after SIGKILL).
        exitcode: i32,
    },
    /// A result was not ready within the timeout
    /// (`multiprocessing.TimeoutError`): `AsyncResult::get_timeout`.
    #[error("TimeoutError: the result is not ready")]
    Timeout,

    // ---- Connections (CPython's OSError / EOFError / ValueError) ----
    /// The peer closed its end and every queued message was delivered
    /// (CPython's `EOFError`): `Connection::recv*`; `Listener::accept` /
    /// `Client::connect` when the peer leaves mid-handshake.
    #[error("EOFError: the other end of the connection is closed")]
    Eof,
    /// The peer closed its end in the middle of a message:
    /// `Connection::recv*`.
    #[error("got end of file during message")]
    EofDuringMessage,
    /// Any `Connection` operation after its `close()`.
    #[error("handle is closed")]
    HandleClosed,
    /// `send*` on the read-only end of `pipe(false)`.
    #[error("connection is read-only")]
    ReadOnly,
    /// `recv*` or `poll` on the write-only end of `pipe(false)`.
    #[error("connection is write-only")]
    WriteOnly,
    /// `Connection::recv_bytes_max` of a message longer than its
    /// `maxlength` (the end becomes unreadable, as in CPython).
    #[error("bad message length")]
    BadMessageLength,
    /// A header announcing more than the configured maximum message
    /// size (`set_max_message`): `Connection::recv*`, and the
    /// authentication handshake of `Listener::accept` / `Client::connect`.
    #[error("message of {len} bytes exceeds the maximum message size of {max} bytes")]
    MessageTooLarge {
        /// Announced length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// `Connection::recv_bytes_into` with a buffer shorter than the
    /// message; holds the whole message, which was consumed.
    #[error("buffer too short: message of {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),
    /// `Connection::recv::<B>()`, `Queue::get*` of a message that was sent
    /// as another type (or with `send_bytes`); the message is consumed.
    #[error("type mismatch: expected {expected}, received {found}")]
    TypeMismatch {
        /// The type asked for.
        expected: String,
        /// The type the sender sent (or "bytes" for `send_bytes`).
        found: String,
    },
    /// A value could not be serialised; the [`EncodeError`] carries the
    /// refusing `Serialize` impl's own text (its `Error::custom`), as
    /// CPython shows the pickling error's. `Connection::send`,
    /// `SimpleQueue::put`, a `Queue`'s put (inside
    /// [`PutError::Encode`]), `Process::start` / `mproc::spawn` (the
    /// arguments), a `Pool` task's or initializer's arguments,
    /// `set_child_initializer`.
    #[error("cannot encode message: {0}")]
    Encode(#[from] EncodeError),
    /// A payload could not be deserialised (not a valid value of the
    /// type, trailing bytes, nesting too deep); the [`DecodeError`] carries
    /// the refusing `Deserialize` impl's own text: `Connection::recv`,
    /// `Queue::get*`, `JoinHandle::join` and a `Pool` task's result.
    #[error("cannot decode message: {0}")]
    Decode(#[from] DecodeError),
    /// Sending to a peer that closed its end (EPIPE; never a SIGPIPE
    /// death): `Connection::send*`.
    #[error("broken pipe: the other end of the connection is closed")]
    BrokenPipe,
    /// The peer did not prove the authkey (CPython's
    /// `AuthenticationError`): `Listener::accept`, `Client::connect`.
    #[error("AuthenticationError: {0}")]
    Authentication(&'static str),
    /// `Listener::accept` after `Listener::close`.
    #[error("listener is closed")]
    ListenerClosed,
    /// An address that cannot be parsed: `Address::from_str`
    /// (`"...".parse::<Address>()`).
    #[error("invalid address: {0}")]
    InvalidAddress(String),

    // ---- Queues (CPython's queue.Empty / queue.Full / ValueError) ----
    /// `Queue::get_nowait` / `get_timeout` found nothing (`queue.Empty`).
    #[error("queue.Empty: the queue is empty")]
    Empty,
    /// `put_nowait` / `put_timeout` on a full queue (`queue.Full`), as
    /// `Error` when a [`PutError::Full`] is converted with `?`.
    #[error("queue.Full: the queue is full")]
    Full,
    /// `Queue::get*` after `close()` in this process (a put's is
    /// [`PutError::Closed`]); `SimpleQueue::put`/`get` after its `close()`.
    #[error("Queue is closed")]
    QueueClosed,
    /// The queue can no longer deliver: its owner process is gone.
    /// `Queue::get*` (a put's is [`PutError::Disconnected`]).
    #[error("queue disconnected: the process that owns the queue is gone")]
    Disconnected,
    /// `Queue::join_thread` before `close()` (CPython asserts).
    #[error("join_thread() needs close() first")]
    NotClosed,
    /// `JoinableQueue::task_done` called more times than items were put
    /// (CPython's ValueError).
    #[error("task_done() called too many times")]
    TaskDoneTooManyTimes,

    // ---- Synchronisation and shared state (CPython's ValueError / threading.BrokenBarrierError) ----
    /// A `Barrier` was broken (a party timed out, died or called `abort`,
    /// or `reset` ran while parties waited): threading.BrokenBarrierError.
    /// `Barrier::wait` / `wait_timeout`.
    #[error("BrokenBarrierError: the barrier is broken")]
    BrokenBarrier,
    /// `BoundedSemaphore::release` past its initial value (CPython's
    /// ValueError).
    #[error("semaphore or lock released too many times")]
    ReleasedTooManyTimes,
    /// A blocking `acquire` of a non-recursive lock this thread already
    /// holds: it could never return (CPython blocks for ever).
    /// `Lock::acquire`, `Value::lock`, `Array::lock`.
    #[error("deadlock: this thread already holds the lock")]
    WouldDeadlock,
    /// A shared object that arrived from another process is not what it
    /// claims (wrong kind, size or header): refused, never accessed.
    /// Creating a shared object whose size overflows; on receipt (a
    /// forged handle) the refusal is an [`Error::Decode`].
    #[error("invalid shared object: {0}")]
    InvalidShared(String),

    /// Any other OS error, from any call that does I/O.
    #[error(transparent)]
    Io(std::io::Error),
}

impl Error {
    /// An [`Error::Encode`] caused by a serializer's error `source` (its
    /// text is the message).
    pub fn encode<E: std::error::Error + Send + Sync + 'static>(source: E) -> Error {
        Error::Encode(EncodeError::from_source(source))
    }

    /// An [`Error::Encode`] saying `message` (a refusal of mproc's own).
    pub fn encode_msg(message: impl Into<Cow<'static, str>>) -> Error {
        Error::Encode(EncodeError::new(message))
    }

    /// An [`Error::Decode`] caused by a deserializer's error `source` (its
    /// text is the message).
    pub fn decode<E: std::error::Error + Send + Sync + 'static>(source: E) -> Error {
        Error::Decode(DecodeError::from_source(source))
    }

    /// An [`Error::Decode`] saying `message`.
    pub fn decode_msg(message: impl Into<Cow<'static, str>>) -> Error {
        Error::Decode(DecodeError::new(message))
    }

    /// An [`Error::Bootstrap`] saying `message`.
    pub fn bootstrap(message: impl Into<Cow<'static, str>>) -> Error {
        Error::Bootstrap(BootstrapError::new(message))
    }

    /// An [`Error::Bootstrap`] saying `message`, caused by `source`
    /// (`Display` shows "message: source").
    pub fn bootstrap_with<E: std::error::Error + Send + Sync + 'static>(
        message: impl Into<Cow<'static, str>>,
        source: E,
    ) -> Error {
        Error::Bootstrap(BootstrapError::caused_by(message, source))
    }

    /// Whether the other side is gone: [`Error::Eof`],
    /// [`Error::EofDuringMessage`], [`Error::BrokenPipe`] (a connection's
    /// peer closed its end) or [`Error::Disconnected`] (a queue's owner
    /// process is gone). Nothing more will arrive or be delivered.
    pub fn is_disconnected(&self) -> bool {
        matches!(
            self,
            Error::Eof | Error::EofDuringMessage | Error::BrokenPipe | Error::Disconnected
        )
    }

    /// Whether this is CPython's `EOFError`: [`Error::Eof`], the peer
    /// closed its end and every queued message was delivered.
    pub fn is_eof(&self) -> bool {
        matches!(self, Error::Eof)
    }

    /// Whether a timed or non-blocking call gave up waiting:
    /// [`Error::Timeout`] (`multiprocessing.TimeoutError`), [`Error::Empty`]
    /// (`queue.Empty`) or [`Error::Full`] (`queue.Full`). Trying again
    /// later may succeed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout | Error::Empty | Error::Full)
    }

    /// Whether the call was made on something this process closed:
    /// [`Error::HandleClosed`], [`Error::QueueClosed`],
    /// [`Error::ListenerClosed`] or [`Error::ProcessClosed`].
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            Error::HandleClosed | Error::QueueClosed | Error::ListenerClosed | Error::ProcessClosed
        )
    }

    /// Whether a typed receive got another type's message:
    /// [`Error::TypeMismatch`] (the message was consumed).
    pub fn is_type_mismatch(&self) -> bool {
        matches!(self, Error::TypeMismatch { .. })
    }

    /// Whether the peer failed the authkey handshake (CPython's
    /// `AuthenticationError`): [`Error::Authentication`].
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Authentication(_))
    }
}

/// A message and the error that caused it, either of which may be absent:
/// the shared body of [`EncodeError`], [`DecodeError`] and
/// [`BootstrapError`]. `Display` shows "message: source" (or the one
/// there is); `source()` is the cause.
#[derive(Debug, Clone)]
struct Detail {
    message: Option<Cow<'static, str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (Some(m), Some(s)) => write!(f, "{m}: {s}"),
            (Some(m), None) => f.write_str(m),
            (None, Some(s)) => s.fmt(f),
            (None, None) => Ok(()),
        }
    }
}

macro_rules! detail_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(Detail);

        impl $name {
            /// An error saying `message`, with no underlying cause.
            pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
                $name(Detail {
                    message: Some(message.into()),
                    source: None,
                })
            }

            /// An error caused by `source`, whose text is the message.
            pub fn from_source<E: std::error::Error + Send + Sync + 'static>(source: E) -> Self {
                $name(Detail {
                    message: None,
                    source: Some(Arc::new(source)),
                })
            }

            /// An error saying `message`, caused by `source` (`Display`
            /// shows "message: source").
            pub fn caused_by<E: std::error::Error + Send + Sync + 'static>(
                message: impl Into<Cow<'static, str>>,
                source: E,
            ) -> Self {
                $name(Detail {
                    message: Some(message.into()),
                    source: Some(Arc::new(source)),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match &self.0.source {
                    Some(s) => Some(&**s),
                    None => None,
                }
            }
        }
    };
}

detail_error! {
    /// Why a value could not be serialised ([`Error::Encode`]).
    ///
    /// `Display` is the refusing `Serialize` impl's own text (what it gave
    /// `serde::ser::Error::custom`, e.g. "cannot pickle 'socket' object"),
    /// else the format's error (also its `source()`), else mproc's reason.
    EncodeError
}

detail_error! {
    /// Why a payload could not be deserialised ([`Error::Decode`]).
    ///
    /// `Display` is the refusing `Deserialize` impl's own text (or serde's,
    /// e.g. "invalid value: ..., expected ..." for a derived impl), else the
    /// format's error (also its `source()`), else mproc's reason (trailing
    /// bytes, nesting too deep, ...).
    DecodeError
}

detail_error! {
    /// Why a launch step failed ([`Error::Bootstrap`]): what mproc was
    /// doing, and the OS or peer error that stopped it (its `source()`).
    BootstrapError
}

impl EncodeError {
    /// A `Serialize` impl's refusal, with the text it gave `custom`.
    pub(crate) fn custom(text: String) -> Self {
        EncodeError::new(text)
    }

    /// The format's own error (no custom text was given).
    pub(crate) fn format(e: postcard::Error) -> Self {
        EncodeError::from_source(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::BrokenPipe,
            _ => Error::Io(e),
        }
    }
}

/// A failed queue put; hands the item back (like crossbeam's `TrySendError`).
#[non_exhaustive]
pub enum PutError<T> {
    /// The queue is full (non-blocking or timed put).
    Full(T),
    /// `close()` was called on this queue in this process.
    Closed(T),
    /// The item could not be serialised; the queue keeps working.
    Encode(T, Error),
    /// The queue's owner is gone: nothing can be put any more.
    Disconnected(T),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Closed(t)
            | PutError::Encode(t, _)
            | PutError::Disconnected(t) => t,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Encode(_, e) => write!(f, "Encode(.., {e:?})"),
            PutError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => fmt::Display::fmt(&Error::Full, f),
            PutError::Closed(_) => fmt::Display::fmt(&Error::QueueClosed, f),
            PutError::Encode(_, e) => fmt::Display::fmt(e, f),
            PutError::Disconnected(_) => fmt::Display::fmt(&Error::Disconnected, f),
        }
    }
}

/// Transparent like its `Display`: an `Encode`'s source is the
/// [`EncodeError`] (the refusing impl's text).
impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Encode(_, e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Full(_) => Error::Full,
            PutError::Closed(_) => Error::QueueClosed,
            PutError::Encode(_, e) => e,
            PutError::Disconnected(_) => Error::Disconnected,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::error::Error as _;
    use std::sync::{Arc, Mutex};

    use serde::ser::{Error as _, SerializeSeq, Serializer};
    use serde::Serialize;

    use super::*;

    const SOCKET: &str = "cannot pickle 'socket' object";

    /// A value that refuses to be serialised, as CPython's socket refuses
    /// to be pickled.
    struct Socket;

    impl Serialize for Socket {
        fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            Err(S::Error::custom(SOCKET))
        }
    }

    /// Adds context to its field's refusal.
    struct Wrapper(Socket);

    impl Serialize for Wrapper {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(1))?;
            seq.serialize_element(&self.0)
                .map_err(|e| S::Error::custom(format!("field 0 of Wrapper: {e}")))?;
            seq.end()
        }
    }

    /// A sequence whose length is not known up front (postcard refuses).
    struct Unsized;

    impl Serialize for Unsized {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.serialize_seq(None)?.end()
        }
    }

    #[derive(Serialize)]
    enum Deep {
        Struct {
            before: u8,
            inner: Vec<Option<(u8, Socket)>>,
        },
    }

    /// Every shape serde has, to check the capturing wrapper writes the
    /// very bytes postcard writes.
    #[derive(Serialize)]
    struct Everything {
        unit: (),
        small: (bool, i8, i16, i32, i64, i128, u8, u16, u32, u64, u128),
        floats: (f32, f64),
        text: (char, String, &'static str),
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        some: Option<Box<Everything>>,
        none: Option<u8>,
        unit_struct: UnitStruct,
        newtype: Newtype,
        tuple_struct: TupleStruct,
        variants: Vec<Variants>,
        map: BTreeMap<String, Vec<u16>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
    }

    #[derive(Serialize)]
    struct UnitStruct;
    #[derive(Serialize)]
    struct Newtype(u32);
    #[derive(Serialize)]
    struct TupleStruct(u8, String);
    #[derive(Serialize)]
    enum Variants {
        Unit,
        Newtype(i64),
        Tuple(u8, u8),
        Struct { a: u8, b: Option<String> },
    }

    fn everything(nested: bool) -> Everything {
        Everything {
            unit: (),
            small: (
                true,
                -1,
                -300,
                -70_000,
                i64::MIN,
                i128::MAX,
                255,
                300,
                70_000,
                u64::MAX,
                u128::MAX,
            ),
            floats: (1.5, -2.25),
            text: ('é', "owned".into(), "borrowed"),
            bytes: vec![0, 1, 255],
            some: nested.then(|| Box::new(everything(false))),
            none: None,
            unit_struct: UnitStruct,
            newtype: Newtype(7),
            tuple_struct: TupleStruct(1, "two".into()),
            variants: vec![
                Variants::Unit,
                Variants::Newtype(-5),
                Variants::Tuple(3, 4),
                Variants::Struct {
                    a: 9,
                    b: Some("b".into()),
                },
            ],
            map: BTreeMap::from([("k".into(), vec![1, 2]), ("l".into(), vec![])]),
            skipped: None,
        }
    }

    #[test]
    fn the_wrapper_writes_what_postcard_writes() {
        let value = everything(true);
        let ours = capture::wrapped_to_vec(&value).unwrap();
        assert_eq!(ours, postcard::to_stdvec(&value).unwrap());
        assert_eq!(to_vec(&value).unwrap(), ours);
    }

    /// The bug this fixes: postcard alone says only "Serde Serialization
    /// Error" and the impl's text is lost.
    #[test]
    fn a_custom_refusal_keeps_its_text() {
        let lost = postcard::to_stdvec(&Socket).unwrap_err().to_string();
        assert!(!lost.contains(SOCKET), "{lost}");
        let e = to_vec(&Socket).unwrap_err();
        assert_eq!(e.to_string(), SOCKET);
        assert!(e.source().is_none(), "the text is the whole cause");
        let e = Error::from(e);
        assert_eq!(e.to_string(), format!("cannot encode message: {SOCKET}"));
        // The chain: Error → EncodeError (the impl's text) → nothing.
        let source = e.source().expect("Encode has a source");
        assert_eq!(source.to_string(), SOCKET);
        assert!(source.downcast_ref::<EncodeError>().is_some());
        assert!(source.source().is_none());
    }

    #[test]
    fn a_nested_refusal_keeps_its_text() {
        let deep = Deep::Struct {
            before: 1,
            inner: vec![None, Some((2, Socket))],
        };
        assert_eq!(to_vec(&deep).unwrap_err().to_string(), SOCKET);
        let direct = capture::wrapped_to_vec(&deep).unwrap_err();
        assert_eq!(direct.to_string(), SOCKET);
        let map = BTreeMap::from([(
            1u8,
            vec![Some(Deep::Struct {
                before: 0,
                inner: vec![Some((0, Socket))],
            })],
        )]);
        assert_eq!(to_vec(&map).unwrap_err().to_string(), SOCKET);
        assert_eq!(to_vec(&(1u8, Socket)).unwrap_err().to_string(), SOCKET);
        // A typed message's encode keeps it too.
        let e = crate::tag::encode(&(1u8, Socket), &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), format!("cannot encode message: {SOCKET}"));
    }

    /// An impl that adds context to an inner refusal sees the inner text
    /// (not postcard's "Serde Serialization Error"), and its text wins.
    #[test]
    fn context_added_up_the_tree_keeps_the_inner_text() {
        let e = to_vec(&vec![Wrapper(Socket)]).unwrap_err();
        assert_eq!(e.to_string(), format!("field 0 of Wrapper: {SOCKET}"));
    }

    /// std's own refusal: a poisoned `Mutex` (serde's impl says why).
    #[test]
    fn a_poisoned_mutex_says_so() {
        let m = Arc::new(Mutex::new(5u8));
        let m2 = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _guard = m2.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(m.is_poisoned());
        let e = to_vec(&*m).unwrap_err().to_string();
        assert!(e.contains("poison"), "{e}");
    }

    /// The format's own refusal: postcard's error, as text and as source.
    #[test]
    fn a_format_refusal_is_the_source() {
        let e = Error::from(to_vec(&Unsized).unwrap_err());
        let postcard_text = postcard::Error::SerializeSeqLengthUnknown.to_string();
        assert_eq!(
            e.to_string(),
            format!("cannot encode message: {postcard_text}")
        );
        let encode = e.source().unwrap();
        let cause = encode.source().expect("postcard's error is the cause");
        assert_eq!(
            cause.downcast_ref::<postcard::Error>(),
            Some(&postcard::Error::SerializeSeqLengthUnknown)
        );
    }

    #[test]
    fn decode_and_bootstrap_chain_to_their_cause() {
        let bad = postcard::from_bytes::<String>(&[5, b'a']).unwrap_err();
        let e = Error::decode(bad.clone());
        assert_eq!(e.to_string(), format!("cannot decode message: {bad}"));
        let cause = e.source().unwrap().source().unwrap();
        assert_eq!(cause.downcast_ref::<postcard::Error>(), Some(&bad));
        assert!(Error::decode_msg("3 trailing bytes")
            .source()
            .unwrap()
            .source()
            .is_none());

        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entropy");
        let e = Error::bootstrap_with("no secret for the launch", io);
        assert_eq!(
            e.to_string(),
            "bootstrap failed: no secret for the launch: no entropy"
        );
        let cause = e.source().unwrap().source().unwrap();
        let io = cause.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        let e = Error::bootstrap("the launcher thread panicked");
        assert_eq!(
            e.to_string(),
            "bootstrap failed: the launcher thread panicked"
        );
        assert!(matches!(&e, Error::Bootstrap(b) if b.source().is_none()));
        // The payloads are `Clone` (a pool hands one failure to many
        // waiters) and the error stays `Send + Sync`.
        fn send_sync<T: Send + Sync + 'static>(_: &T) {}
        send_sync(&e);
        let Error::Bootstrap(b) = e else {
            unreachable!()
        };
        assert_eq!(b.clone().to_string(), b.to_string());
    }

    /// A port number that refuses, on decode, values over 65535.
    #[derive(Serialize, Debug)]
    struct Port(u32);

    impl<'de> serde::Deserialize<'de> for Port {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            use serde::de::Error as _;
            let n = u32::deserialize(d)?;
            if n > 65535 {
                return Err(D::Error::custom(format!("port {n} is out of range")));
            }
            Ok(Port(n))
        }
    }

    /// The decode side: a `Deserialize` impl's text (and serde's own, for
    /// derived impls) reaches the user, at any depth, where postcard
    /// alone says "Serde Deserialization Error".
    #[test]
    fn a_decode_refusal_keeps_its_text() {
        let mut port = Vec::new();
        crate::tag::encode(&Port(70_000), &mut port).unwrap();
        let e = crate::tag::decode::<Port>(&port).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode message: port 70000 is out of range"
        );
        assert!(matches!(&e, Error::Decode(d) if d.source().is_none()));

        #[derive(Serialize, serde::Deserialize, Debug)]
        enum Config {
            Listen { ports: Vec<Option<Port>> },
        }
        let mut payload = Vec::new();
        let config = Config::Listen {
            ports: vec![Some(Port(80)), None, Some(Port(99_999))],
        };
        crate::tag::encode(&config, &mut payload).unwrap();
        let e = crate::tag::decode::<Config>(&payload).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode message: port 99999 is out of range"
        );

        // serde's own word on a value of the wrong shape (an unknown
        // variant index) is a type mismatch, not a refusal.
        #[derive(Serialize)]
        enum Wide {
            _A,
            _B,
            C,
        }
        #[derive(serde::Deserialize, Debug)]
        enum Narrow {
            _A,
            _B,
        }
        let mut payload = Vec::new();
        crate::tag::encode(&Wide::C, &mut payload).unwrap();
        let e = crate::tag::decode::<Narrow>(&payload).unwrap_err();
        assert!(e.is_type_mismatch(), "{e:?}");

        // The format's own error is still the source.
        let e = crate::tag::decode::<Port>(&port[..port.len() - 1]).unwrap_err();
        let cause = e.source().unwrap().source();
        assert!(cause.unwrap().is::<postcard::Error>(), "{e:?}");
    }

    #[test]
    fn debug_is_derived_not_display() {
        assert_eq!(format!("{:?}", Error::Eof), "Eof");
        assert_eq!(format!("{:?}", Error::Timeout), "Timeout");
        let e = Error::from(to_vec(&Socket).unwrap_err());
        let debug = format!("{e:?}");
        assert!(debug.starts_with("Encode(EncodeError("), "{debug}");
        assert!(debug.contains(SOCKET), "{debug}");
        let put: PutError<u8> = PutError::Encode(1, e);
        assert!(format!("{put:?}").starts_with("Encode(.., Encode("));
        assert_eq!(put.to_string(), format!("cannot encode message: {SOCKET}"));
        assert_eq!(put.source().unwrap().to_string(), SOCKET);
        assert!(PutError::Full(1).source().is_none());
    }

    #[test]
    fn kind_helpers() {
        let io = || Error::from(std::io::Error::other("x"));
        let mismatch = || Error::TypeMismatch {
            expected: "u8".into(),
            found: "bytes".into(),
        };
        // (error, disconnected, eof, timeout, closed, type mismatch, auth)
        let table = [
            (Error::Eof, [true, true, false, false, false, false]),
            (
                Error::EofDuringMessage,
                [true, false, false, false, false, false],
            ),
            (Error::BrokenPipe, [true, false, false, false, false, false]),
            (
                Error::Disconnected,
                [true, false, false, false, false, false],
            ),
            (Error::Timeout, [false, false, true, false, false, false]),
            (Error::Empty, [false, false, true, false, false, false]),
            (Error::Full, [false, false, true, false, false, false]),
            (
                Error::HandleClosed,
                [false, false, false, true, false, false],
            ),
            (
                Error::QueueClosed,
                [false, false, false, true, false, false],
            ),
            (
                Error::ListenerClosed,
                [false, false, false, true, false, false],
            ),
            (
                Error::ProcessClosed,
                [false, false, false, true, false, false],
            ),
            (mismatch(), [false, false, false, false, true, false]),
            (
                Error::Authentication("digest received was wrong"),
                [false, false, false, false, false, true],
            ),
            (io(), [false; 6]),
            (Error::encode_msg("no"), [false; 6]),
            (Error::PoolTerminated, [false; 6]),
        ];
        for (e, want) in table {
            let got = [
                e.is_disconnected(),
                e.is_eof(),
                e.is_timeout(),
                e.is_closed(),
                e.is_type_mismatch(),
                e.is_auth(),
            ];
            assert_eq!(got, want, "{e:?}");
        }
        // A broken pipe from the OS becomes the variant the helper knows.
        let e = Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(e.is_disconnected());
    }
}
