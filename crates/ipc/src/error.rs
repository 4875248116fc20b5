//! The one error type users see: `mproc::Error` (re-exported by `mproc`).
//!
//! Each CPython error case is its own variant and its `Display` carries
//! CPython's wording, so a Python user recognises the message.

use std::fmt;

/// `Result<T, mproc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error mproc reports.
///
/// `Debug` prints the same text as `Display`, so that a `main` returning
/// `mproc::Result` ends with a readable line.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- Process life cycle (CPython's ValueError / AssertionError) ----
    /// `start()` on a process that was already started.
    #[error("cannot start a process twice")]
    StartedTwice,
    /// A method that needs the OS process was called after `close()`.
    #[error("process object is closed")]
    ProcessClosed,
    /// `join()` before `start()`.
    #[error("can only join a started process")]
    JoinNotStarted,
    /// `sentinel()` (or another started-only query) before `start()`.
    #[error("process not started")]
    NotStarted,
    /// `set_daemon()` after `start()`.
    #[error("process has already started")]
    AlreadyStarted,
    /// `start()` from a daemonic process.
    #[error("daemonic processes are not allowed to have children")]
    DaemonicChildren,
    /// `close()` while the child still runs.
    #[error("Cannot close a process while it is still running. You should first call join() or terminate().")]
    CloseRunning,
    /// `run()` on a process that was started, or run already.
    #[error("run() needs a process that was never started nor run")]
    RunAfterStart,
    /// The target fn was not registered with `#[mproc::target]`.
    #[error("target `{name}` is not registered: add #[mproc::target] to `fn {short}`")]
    UnregisteredTarget {
        /// The fn's full path.
        name: String,
        /// The fn's own name.
        short: String,
    },
    /// A closure was passed where a target fn goes: a child cannot find a
    /// closure (it has no name in the executable), only a free fn
    /// registered with `#[mproc::target]`.
    #[error("closures cannot be targets: `{name}` is a closure; move its body into a free fn marked #[mproc::target] and pass that fn")]
    ClosureTarget {
        /// The closure's type name.
        name: String,
    },
    /// A spawn from a child process that did not go through mproc's entry.
    #[error("refusing to spawn from a child process that skipped mproc's entry (fork-bomb guard): add #[mproc::main] to main, or call mproc::init() as its first line")]
    ForkBomb,
    /// The child died or gave up before running its target.
    #[error("child process {pid} failed to start ({status}): {reason}")]
    ChildFailed {
        /// The child's pid.
        pid: u32,
        /// How it ended, e.g. "exit status: 3" or "still running".
        status: String,
        /// What went wrong.
        reason: String,
    },
    /// The child ended without reporting a result (killed, `exit(n)`, ...).
    #[error("process {name} (pid {pid}) ended without a result (exitcode {exitcode})")]
    NoResult {
        /// The child's name (`Process-1`, or the one it was given).
        name: String,
        /// The child's pid.
        pid: u32,
        /// Its CPython-style exit code.
        exitcode: i32,
    },
    /// The target panicked in the child (`mproc::spawn`'s `join`).
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
    /// The target returned `Err(e)` (from `Process::run`); holds `e` as text.
    #[error("target returned an error: {0}")]
    TargetError(String),
    /// A launch step failed (in the parent or the child).
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    /// What this platform cannot do (the forkserver start method on
    /// Windows), with the reason.
    #[error("unsupported on this platform: {0}")]
    Unsupported(String),
    /// `set_start_method` once a process was started (CPython's
    /// `RuntimeError: context has already been set`).
    #[error("context has already been set")]
    ContextAlreadySet,

    // ---- Pool (CPython's ValueError / multiprocessing.TimeoutError) ----
    /// `Pool::new(0)` (or a builder with `processes(0)`).
    #[error("Number of processes must be at least 1")]
    PoolSize,
    /// A pool built with `maxtasksperchild(0)`.
    #[error("maxtasksperchild must be a positive int or None")]
    PoolMaxTasks,
    /// A chunk size of 0 given to a pool's `*_chunked` method.
    #[error("Chunksize must be 1+, not 0")]
    PoolChunksize,
    /// A task submitted to a pool after `close()` or `terminate()`.
    #[error("Pool not running")]
    PoolNotRunning,
    /// `Pool::join()` before `close()` or `terminate()`.
    #[error("Pool is still running")]
    PoolStillRunning,
    /// The pool was terminated (or dropped) before this task completed.
    #[error("the pool was terminated before this task completed")]
    PoolTerminated,
    /// A pool worker could not start (its launch or its initializer
    /// failed): the pool runs no more tasks.
    #[error("the pool cannot run tasks: {0}")]
    PoolBroken(String),
    /// The pool worker running this task died (killed, aborted,
    /// `std::process::exit`, out of memory) before reporting its result.
    #[error("worker process {pid} died (exit code {exitcode}) while running this task")]
    WorkerDied {
        /// The worker's pid.
        pid: u32,
        /// Its CPython-style exit code (-9 after SIGKILL).
        exitcode: i32,
    },
    /// A result was not ready within the timeout
    /// (`multiprocessing.TimeoutError`).
    #[error("TimeoutError: the result is not ready")]
    Timeout,

    // ---- Connections (CPython's OSError / EOFError / ValueError) ----
    /// The peer closed its end and every queued message was delivered.
    #[error("EOFError: the other end of the connection is closed")]
    Eof,
    /// The peer closed its end in the middle of a message.
    #[error("got end of file during message")]
    EofDuringMessage,
    /// Operation on a closed connection.
    #[error("handle is closed")]
    HandleClosed,
    /// Write on a read-only end.
    #[error("connection is read-only")]
    ReadOnly,
    /// Read on a write-only end.
    #[error("connection is write-only")]
    WriteOnly,
    /// A message longer than the caller's `maxlength`.
    #[error("bad message length")]
    BadMessageLength,
    /// A header announcing more than the configured maximum message size.
    #[error("message of {len} bytes exceeds the maximum message size of {max} bytes")]
    MessageTooLarge {
        /// Announced length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// `recv_bytes_into` with a buffer shorter than the message; holds the
    /// whole message, which was consumed.
    #[error("buffer too short: message of {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),
    /// `recv::<B>()` of a message that was sent as another type.
    #[error("type mismatch: expected {expected}, received {found}")]
    TypeMismatch {
        /// The type asked for.
        expected: String,
        /// The type the sender sent (or "bytes" for `send_bytes`).
        found: String,
    },
    /// A value could not be serialised.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A payload could not be deserialised.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// Sending to a peer that closed its end (EPIPE; never a SIGPIPE death).
    #[error("broken pipe: the other end of the connection is closed")]
    BrokenPipe,
    /// The peer did not prove the authkey (CPython's AuthenticationError).
    #[error("AuthenticationError: {0}")]
    Authentication(&'static str),
    /// `accept()` on a closed listener.
    #[error("listener is closed")]
    ListenerClosed,
    /// An address that cannot be parsed or used.
    #[error("invalid address: {0}")]
    InvalidAddress(String),

    // ---- Queues (CPython's queue.Empty / queue.Full / ValueError) ----
    /// `get_nowait`/`get_timeout` found nothing (queue.Empty).
    #[error("queue.Empty: the queue is empty")]
    Empty,
    /// `put_nowait`/`put_timeout` on a full queue (queue.Full).
    #[error("queue.Full: the queue is full")]
    Full,
    /// `put`/`get` after `close()`.
    #[error("Queue is closed")]
    QueueClosed,
    /// The queue can no longer deliver: its owner process is gone.
    #[error("queue disconnected: the process that owns the queue is gone")]
    Disconnected,
    /// `join_thread()` before `close()` (CPython asserts).
    #[error("join_thread() needs close() first")]
    NotClosed,
    /// `JoinableQueue::task_done` called more times than items were put
    /// (CPython's ValueError).
    #[error("task_done() called too many times")]
    TaskDoneTooManyTimes,

    // ---- Synchronisation and shared state (CPython's ValueError / threading.BrokenBarrierError) ----
    /// A `Barrier` was broken (a party timed out, died or called `abort`,
    /// or `reset` ran while parties waited): threading.BrokenBarrierError.
    #[error("BrokenBarrierError: the barrier is broken")]
    BrokenBarrier,
    /// `BoundedSemaphore::release` past its initial value (CPython's ValueError).
    #[error("semaphore or lock released too many times")]
    ReleasedTooManyTimes,
    /// A blocking `acquire` of a non-recursive lock this thread already
    /// holds: it could never return (CPython blocks for ever).
    #[error("deadlock: this thread already holds the lock")]
    WouldDeadlock,
    /// A shared object that arrived from another process is not what it
    /// claims (wrong kind, size or header): refused, never accessed.
    #[error("invalid shared object: {0}")]
    InvalidShared(String),

    /// Any other OS error.
    #[error(transparent)]
    Io(std::io::Error),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
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

impl<T> std::error::Error for PutError<T> {}

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
