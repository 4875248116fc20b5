//! Windows: handles, `DuplicateHandle` transfer, waiting on pipes, sockets
//! and waitable objects, and the OS side of `Connection`, `pipe`,
//! `Listener` and `Client` (named pipes in `pipe.rs`, TCP in `tcp.rs`).

mod exit_hook;
mod pipe;
mod shm;
mod sync;
mod tcp;

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle as StdBorrowed, FromRawHandle, FromRawSocket,
    IntoRawHandle, IntoRawSocket, OwnedHandle as StdOwned, RawSocket,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_SAME_ACCESS, FALSE, HANDLE, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, WaitForMultipleObjects, WaitForSingleObject, INFINITE,
};

use crate::frame;

pub use exit_hook::at_exit;
pub use pipe::private_pipe_security;
pub use shm::{unlink_named, Mapping};
pub use sync::{handle_value, import_handle, thread_identity, Acquired, SyncBlock};

/// An owned OS handle.
pub type OwnedHandle = StdOwned;
/// A borrowed OS handle.
pub type BorrowedHandle<'a> = StdBorrowed<'a>;
/// A raw OS handle value.
pub type RawHandle = std::os::windows::io::RawHandle;

/// Borrows a raw handle that the caller keeps open for `'a`.
///
/// # Safety
/// `raw` must be an open handle that outlives the borrow.
pub unsafe fn borrow_raw<'a>(raw: RawHandle) -> BorrowedHandle<'a> {
    StdBorrowed::borrow_raw(raw)
}

/// The raw value of a borrowed handle.
pub fn raw_of(h: BorrowedHandle<'_>) -> RawHandle {
    h.as_raw_handle()
}

/// Where handles are sent: the target process (a handle to it), into which
/// they are duplicated (CPython's `reduction.DupHandle`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub RawHandle);

// SAFETY: a process handle value may be used from any thread.
unsafe impl Send for Peer {}
// SAFETY: as above.
unsafe impl Sync for Peer {}

/// A stream over a borrowed pipe handle that never closes it.
fn stream_of(h: BorrowedHandle<'_>) -> ManuallyDrop<std::fs::File> {
    // SAFETY: the handle is open for the borrow; ManuallyDrop never closes it.
    ManuallyDrop::new(unsafe { std::fs::File::from_raw_handle(h.as_raw_handle()) })
}

/// Duplicates `handles` into the peer process and sends their values over
/// `sock` as one frame; the receiver calls [`recv_handles`].
///
/// Sockets are refused: `DuplicateHandle` does not make a usable socket in
/// another process (that takes `WSADuplicateSocket` and the child's
/// cooperation), so only pipe connections can be passed to a child.
pub fn send_handles(
    sock: BorrowedHandle<'_>,
    handles: &[BorrowedHandle<'_>],
    peer: Peer,
) -> io::Result<()> {
    check_sendable(handles)?;
    let mut values = Vec::with_capacity(handles.len() * 8);
    for h in handles {
        let mut out: HANDLE = std::ptr::null_mut();
        // SAFETY: plain Win32 call with valid handles and an out pointer.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                h.as_raw_handle() as HANDLE,
                peer.0 as HANDLE,
                &mut out,
                0,
                FALSE,
                DUPLICATE_SAME_ACCESS,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        values.extend_from_slice(&(out as usize as u64).to_le_bytes());
    }
    let mut s = stream_of(sock);
    frame::write_frame(&mut *s, &values)?;
    s.flush()
}

/// Receives `n` handles sent by [`send_handles`] (already duplicated into
/// this process).
pub fn recv_handles(sock: BorrowedHandle<'_>, n: usize) -> io::Result<Vec<OwnedHandle>> {
    let mut s = stream_of(sock);
    let values = frame::read_frame(&mut *s, (n as u64) * 8)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if values.len() != n * 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "wrong number of handles",
        ));
    }
    Ok(values
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            let raw = u64::from_le_bytes(b) as usize as RawHandle;
            // SAFETY: the sender duplicated this handle into this process
            // for us alone.
            unsafe { OwnedHandle::from_raw_handle(raw) }
        })
        .collect())
}

/// What a handle given to [`poll_readable`] is, which decides how its
/// readiness is seen.
#[derive(Clone, Copy)]
enum Source {
    /// A named pipe: data or a broken pipe (`PeekNamedPipe`).
    Pipe(HANDLE),
    /// A socket: data, end of file or an error (`WSAPoll`).
    Socket(RawSocket),
    /// A waitable object, e.g. a process (signalled).
    Object(HANDLE),
}

impl Source {
    fn of(h: BorrowedHandle<'_>) -> Source {
        let raw = h.as_raw_handle() as HANDLE;
        if pipe::is_pipe(raw) {
            Source::Pipe(raw)
        } else if tcp::is_socket(raw as RawSocket) {
            Source::Socket(raw as RawSocket)
        } else {
            Source::Object(raw)
        }
    }

    fn ready(self) -> io::Result<bool> {
        Ok(match self {
            Source::Pipe(h) => pipe::ready(h),
            Source::Socket(s) => !tcp::poll(&[s], Some(Duration::ZERO))?.is_empty(),
            // SAFETY: a zero-time wait on an open handle.
            Source::Object(h) => unsafe { WaitForSingleObject(h, 0) == WAIT_OBJECT_0 },
        })
    }
}

fn wait_millis(left: Option<Duration>) -> u32 {
    match left {
        None => INFINITE,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(u128::from(INFINITE - 1)) as u32,
    }
}

/// Waits until one of `handles` is ready — data or end of file on a pipe
/// or socket, a signalled object such as a process that ended — and
/// returns the indices of the ready ones, empty on timeout (`None` waits
/// forever).
///
/// Waitable objects alone are waited on with `WaitForMultipleObjects`,
/// sockets alone with `WSAPoll`. Pipes are not waitable objects, so a set
/// with a pipe (or a mix) is polled with a back-off from 50 µs to 5 ms
/// (CPython issues overlapped zero-byte reads instead).
pub fn poll_readable(
    handles: &[BorrowedHandle<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let sources: Vec<Source> = handles.iter().map(|h| Source::of(*h)).collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let ready_now = || -> io::Result<Vec<usize>> {
        let mut ready = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            if s.ready()? {
                ready.push(i);
            }
        }
        Ok(ready)
    };
    if sources.is_empty() {
        if let Some(t) = timeout {
            std::thread::sleep(t);
        }
        return Ok(Vec::new());
    }
    if sources.iter().all(|s| matches!(s, Source::Socket(_))) {
        let sockets: Vec<RawSocket> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Socket(s) => Some(*s),
                _ => None,
            })
            .collect();
        return tcp::poll(&sockets, timeout);
    }
    if sources.len() <= 64 && sources.iter().all(|s| matches!(s, Source::Object(_))) {
        let objects: Vec<HANDLE> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Object(h) => Some(*h),
                _ => None,
            })
            .collect();
        loop {
            // SAFETY: an array of open handles of its length.
            let r = unsafe {
                WaitForMultipleObjects(
                    objects.len() as u32,
                    objects.as_ptr(),
                    FALSE,
                    wait_millis(left()),
                )
            };
            if r == WAIT_FAILED {
                return Err(io::Error::last_os_error());
            }
            if r != WAIT_TIMEOUT {
                return ready_now();
            }
            if left().is_some_and(|l| l.is_zero()) {
                return Ok(Vec::new());
            }
        }
    }
    let mut pause = Duration::from_micros(50);
    loop {
        let ready = ready_now()?;
        if !ready.is_empty() {
            return Ok(ready);
        }
        if let Some(l) = left() {
            if l.is_zero() {
                return Ok(Vec::new());
            }
            pause = pause.min(l);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Duplicates a handle (not inheritable). A socket is duplicated as a
/// socket (`WSADuplicateSocket`, as std's `try_clone`).
pub fn duplicate(h: BorrowedHandle<'_>) -> io::Result<OwnedHandle> {
    let raw = h.as_raw_handle() as RawSocket;
    if tcp::is_socket(raw) {
        // SAFETY: the socket is open for the borrow; ManuallyDrop never
        // closes it.
        let sock = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_socket(raw) });
        let copy = sock.try_clone()?;
        // SAFETY: a fresh socket we own; sockets are kernel handles.
        return Ok(unsafe { OwnedHandle::from_raw_handle(copy.into_raw_socket() as RawHandle) });
    }
    h.try_clone_to_owned()
}

/// Takes ownership of a raw handle.
///
/// # Safety
/// `raw` must be an open handle owned by nobody else.
pub unsafe fn own_raw(raw: RawHandle) -> OwnedHandle {
    OwnedHandle::from_raw_handle(raw)
}

/// Borrows any `AsHandle`.
pub fn borrow<T: AsHandle>(t: &T) -> BorrowedHandle<'_> {
    t.as_handle()
}

// ---------------------------------------------------------------------------
// Connections: the OS side of `Connection`, `pipe`, `Listener` and `Client`
// (the interface is described in `sys/unix.rs`).
//
// - `pipe()` ends and local Listener/Client connections are named pipes
//   in byte mode, opened for overlapped I/O; a local address is a pipe
//   name, `\\.\pipe\…`.
// - TCP connections are std sockets.
// - Both are byte streams, as on Unix: a frame is read as its header,
//   then exactly its payload. (A message-mode pipe would keep boundaries,
//   but a reader asking for 4 header bytes would then get ERROR_MORE_DATA
//   and the rest of the message in later reads: the same bytes, read
//   another way; byte mode is what every other mproc stream is.)
// ---------------------------------------------------------------------------

/// The textual scheme of a local address (`pipe:\\.\pipe\name`).
pub const LOCAL_SCHEME: &str = "pipe";

/// A frame at most this long is written with one system call (copied
/// together with its header); a longer one as header, then payload.
const SMALL_FRAME: usize = 8 * 1024;

#[derive(Debug)]
enum End {
    Pipe(pipe::PipeEnd),
    Tcp(tcp::TcpEnd),
}

/// One end of a connection: a named pipe or a TCP socket.
///
/// Every method takes `&self`: callers serialise readers and writers
/// themselves (a `Connection` holds a lock for each direction); one
/// thread may read while another writes.
#[derive(Debug)]
pub struct Stream {
    end: End,
}

/// Creates two connected ends of a fresh, private named pipe (CPython's
/// `Pipe()` on Windows), both not inheritable and passable to a child.
pub fn stream_pair() -> io::Result<(Stream, Stream)> {
    let (a, b) = pipe::pair()?;
    Ok((Stream { end: End::Pipe(a) }, Stream { end: End::Pipe(b) }))
}

/// What a closed pipe end's [`Stream::handle`] names: an event that is
/// never signalled, kept for the life of the process.
fn inert_handle() -> BorrowedHandle<'static> {
    static INERT: OnceLock<usize> = OnceLock::new();
    let raw = *INERT.get_or_init(|| {
        use windows_sys::Win32::System::Threading::CreateEventW;
        // SAFETY: an unnamed manual-reset event, never closed.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if h.is_null() {
            // The pseudo-handle of this process: always valid, never
            // signalled while anyone can ask.
            usize::MAX
        } else {
            h as usize
        }
    });
    // SAFETY: the handle is never closed.
    unsafe { StdBorrowed::borrow_raw(raw as RawHandle) }
}

impl Stream {
    /// Wraps a handle received from another process (a pipe end, or a
    /// socket duplicated in this process).
    pub fn from_owned(h: OwnedHandle) -> io::Result<Stream> {
        let raw = h.as_raw_handle();
        if pipe::is_pipe(raw as HANDLE) {
            return Ok(Stream {
                end: End::Pipe(pipe::PipeEnd::new(h)),
            });
        }
        if tcp::is_socket(raw as RawSocket) {
            // SAFETY: the socket's ownership moves from `h` to the stream.
            let sock =
                unsafe { std::net::TcpStream::from_raw_socket(h.into_raw_handle() as RawSocket) };
            return Ok(Stream {
                end: End::Tcp(tcp::TcpEnd::new(sock)),
            });
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the handle is neither a pipe nor a socket",
        ))
    }

    /// The OS handle, for polling, `fileno` and handle transfer. After
    /// [`close_in_place`](Self::close_in_place) a pipe end's handle is
    /// closed, and this names an inert object instead.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        match &self.end {
            End::Pipe(p) => match p.raw() {
                // SAFETY: the handle stays open while `self` is not closed.
                Some(raw) => unsafe { StdBorrowed::borrow_raw(raw) },
                None => inert_handle(),
            },
            // SAFETY: the socket lives as long as `self`.
            End::Tcp(t) => unsafe { StdBorrowed::borrow_raw(t.raw() as RawHandle) },
        }
    }

    /// Reads at most `buf.len()` bytes; `Ok(0)` is end of file, as is a
    /// reset connection.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        unsafe { self.read_raw(buf.as_mut_ptr(), buf.len()) }
    }

    /// # Safety
    /// `buf` must be valid for writes of `len` bytes.
    unsafe fn read_raw(&self, buf: *mut u8, len: usize) -> io::Result<usize> {
        match &self.end {
            End::Pipe(p) => p.read_raw(buf, len),
            End::Tcp(t) => t.read_raw(buf, len),
        }
    }

    /// Reads at most `max` bytes into the spare capacity of `buf`,
    /// appending them; `Ok(0)` is end of file. No byte of `buf` is
    /// initialised before the OS fills it.
    pub fn read_to_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(max.min(1));
        }
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max);
        // SAFETY: the spare capacity is valid for writes of `want` bytes.
        let n = unsafe { self.read_raw(spare.as_mut_ptr().cast(), want)? };
        // SAFETY: the OS initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Writes one frame, `header` then `payload`, completely: a small
    /// frame in one system call, a big one without copying its payload.
    /// A closed peer is `ErrorKind::BrokenPipe`.
    pub fn write_frame(&self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        match &self.end {
            End::Tcp(t) => t.write_parts(&[header, payload]),
            End::Pipe(p) => {
                let total = header.len() + payload.len();
                if total <= SMALL_FRAME {
                    let mut joined = [0u8; SMALL_FRAME];
                    joined[..header.len()].copy_from_slice(header);
                    joined[header.len()..total].copy_from_slice(payload);
                    return p.write_all(&joined[..total]);
                }
                p.write_all(header)?;
                p.write_all(payload)
            }
        }
    }

    /// Waits until the stream has data or end of file (`None` waits
    /// forever, `Some(ZERO)` returns at once). Never consumes anything.
    pub fn poll_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        match &self.end {
            End::Tcp(t) => t.poll(timeout),
            End::Pipe(p) => {
                let deadline = timeout.map(|t| Instant::now() + t);
                let mut pause = Duration::from_micros(50);
                loop {
                    if p.ready()? {
                        return Ok(true);
                    }
                    if let Some(d) = deadline {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(false);
                        }
                        pause = pause.min(left);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// Closes the stream: the peer sees end of file (once no other process
    /// holds this end) and later I/O fails.
    ///
    /// A socket is shut down both ways and kept until drop, so its handle
    /// value stays reserved. A pipe has no shutdown: its handle is closed
    /// (after the operations other threads have in flight on it are
    /// cancelled and have returned), and [`handle`](Self::handle) names an
    /// inert object from then on.
    pub fn close_in_place(&self) -> io::Result<()> {
        match &self.end {
            End::Pipe(p) => {
                p.close();
                Ok(())
            }
            End::Tcp(t) => t.close(),
        }
    }

    /// Whether [`close_in_place`](Self::close_in_place) keeps the handle
    /// value reserved until drop: for a socket, not for a pipe.
    pub fn close_keeps_handle(&self) -> bool {
        matches!(self.end, End::Tcp(_))
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &self.end {
            End::Pipe(p) => p.write_all(buf),
            End::Tcp(t) => t.write_parts(&[buf]),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Listening {
    Pipe(pipe::PipeAcceptor),
    Tcp(tcp::TcpAcceptor),
}

/// A listening endpoint: a named pipe (a new instance per client) or a
/// TCP socket.
#[derive(Debug)]
pub struct Acceptor {
    listening: Listening,
}

/// Creates the named pipe `path` (`\\.\pipe\…`; any other text names
/// `\\.\pipe\<text>`) and listens. Fails if a pipe of that name exists.
pub fn bind_local(path: &Path) -> io::Result<Acceptor> {
    Ok(Acceptor {
        listening: Listening::Pipe(pipe::PipeAcceptor::bind(path)?),
    })
}

/// Binds a TCP socket and listens; returns the bound address (the real
/// port when `addr` asked for port 0).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<(Acceptor, SocketAddr)> {
    let (acceptor, local) = tcp::TcpAcceptor::bind(addr)?;
    Ok((
        Acceptor {
            listening: Listening::Tcp(acceptor),
        },
        local,
    ))
}

impl Acceptor {
    /// Waits for one connection.
    pub fn accept(&self) -> io::Result<Stream> {
        let end = match &self.listening {
            Listening::Pipe(p) => End::Pipe(p.accept()?),
            Listening::Tcp(t) => End::Tcp(t.accept()?),
        };
        Ok(Stream { end })
    }

    /// Stops listening: a blocked `accept` in another thread returns an
    /// error (woken by a connection of our own), later ones fail.
    pub fn close_in_place(&self) -> io::Result<()> {
        match &self.listening {
            Listening::Pipe(p) => p.close(),
            Listening::Tcp(t) => t.close(),
        }
        Ok(())
    }
}

/// Connects to the local listener `path`, waiting while all its pipe
/// instances are busy (at most 20 s, as CPython).
pub fn connect_local(path: &Path) -> io::Result<Stream> {
    Ok(Stream {
        end: End::Pipe(pipe::connect(path)?),
    })
}

/// Connects to a TCP address (Nagle off: every frame goes out at once).
pub fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
    Ok(Stream {
        end: End::Tcp(tcp::connect(addr)?),
    })
}

/// Nothing to remove: a pipe name vanishes with its last handle.
pub fn remove_local(_path: &Path) {}

/// A fresh, unused local address: `\\.\pipe\mproc-<pid>-<n>-<random>`.
pub fn unique_local_name() -> PathBuf {
    pipe::unique_name()
}

impl AsHandle for crate::Connection {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.stream().handle()
    }
}

impl AsRawHandle for crate::Connection {
    fn as_raw_handle(&self) -> RawHandle {
        self.stream().handle().as_raw_handle()
    }
}

/// Creates a directory (Windows local names are pipes, which carry their
/// own current-user-only security descriptor: nothing to restrict here).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// Removes a directory made with [`create_private_dir`] (which must be
/// empty).
pub fn remove_private_dir(path: &Path) -> io::Result<()> {
    std::fs::remove_dir(path)
}

/// Removes another process's directory made with [`create_private_dir`]
/// (only an empty one can go).
pub fn remove_dead_private_dir(path: &Path) -> io::Result<()> {
    std::fs::remove_dir(path)
}

/// Nothing to do: a pipe's access is set when it is created.
pub fn make_private(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Whether [`send_handles`] can pass these handles to another process:
/// sockets cannot (see there). Lets a launch refuse before it starts a
/// child.
pub fn check_sendable(handles: &[BorrowedHandle<'_>]) -> io::Result<()> {
    if handles
        .iter()
        .any(|h| tcp::is_socket(h.as_raw_handle() as RawSocket))
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a TCP connection cannot be passed to a child process on Windows \
             (only pipe() and local Listener/Client connections can)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use std::sync::Arc;

    fn frame(s: &Stream, payload: &[u8]) {
        s.write_frame(&(payload.len() as u32).to_be_bytes(), payload)
            .unwrap();
    }

    fn read_exact(s: &Stream, n: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let want = n - got.len();
            assert!(s.read_to_spare(&mut got, want).unwrap() > 0, "early EOF");
        }
        got
    }

    #[test]
    fn pipe_ends_are_byte_streams_both_ways() {
        let (a, b) = stream_pair().unwrap();
        frame(&a, b"hello");
        assert_eq!(read_exact(&b, 9), b"\x00\x00\x00\x05hello");
        frame(&b, b"back");
        assert_eq!(read_exact(&a, 8), b"\x00\x00\x00\x04back");
    }

    #[test]
    fn one_thread_reads_while_another_writes() {
        let (a, b) = stream_pair().unwrap();
        let big: Vec<u8> = (0..3_000_000).map(|i| (i % 249) as u8).collect();
        std::thread::scope(|s| {
            // `a` is blocked reading while it also writes a big frame.
            let reader = s.spawn(|| read_exact(&a, 4));
            s.spawn(|| frame(&a, &big));
            assert_eq!(read_exact(&b, 4 + big.len())[4..], big[..]);
            frame(&b, b"");
            assert_eq!(reader.join().unwrap(), [0, 0, 0, 0]);
        });
    }

    #[test]
    fn close_ends_the_peer_and_wakes_a_blocked_reader() {
        let (a, b) = stream_pair().unwrap();
        let a = Arc::new(a);
        let blocked = {
            let a = a.clone();
            std::thread::spawn(move || a.read(&mut [0u8; 8]))
        };
        // Give the reader time to block; either way it must return.
        std::thread::sleep(Duration::from_millis(50));
        a.close_in_place().unwrap();
        assert!(blocked.join().unwrap().is_err(), "a read after close fails");
        assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(b.poll_readable(Some(Duration::ZERO)).unwrap());
        let e = b.write_frame(&[0, 0, 0, 1], b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(a.write_frame(&[0, 0, 0, 0], b"").is_err());
        assert!(!a.poll_readable(Some(Duration::ZERO)).unwrap_or(false));
    }

    #[test]
    fn queued_data_before_end_of_file() {
        let (a, b) = stream_pair().unwrap();
        frame(&b, b"never read");
        frame(&a, b"q");
        drop(a);
        assert_eq!(read_exact(&b, 5), b"\x00\x00\x00\x01q");
        assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn readiness_of_pipes_sockets_and_objects() {
        let (a, b) = stream_pair().unwrap();
        let (listener, addr) = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = connect_tcp(addr).unwrap();
        let d = listener.accept().unwrap();
        let hs = [b.handle(), d.handle(), inert_handle()];
        assert!(poll_readable(&hs, Some(Duration::ZERO)).unwrap().is_empty());
        assert!(poll_readable(&hs[1..2], Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty());
        frame(&c, b"s");
        assert_eq!(poll_readable(&hs, None).unwrap(), vec![1]);
        assert_eq!(poll_readable(&hs[1..2], None).unwrap(), vec![0]);
        frame(&a, b"p");
        assert_eq!(poll_readable(&hs, None).unwrap(), vec![0, 1]);
        // An idle socket is not ready (it used to count as a broken pipe).
        assert!(!c.poll_readable(Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn sockets_are_not_passed_to_children() {
        let (listener, addr) = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = connect_tcp(addr).unwrap();
        let _d = listener.accept().unwrap();
        let (ctl, _other) = stream_pair().unwrap();
        let e = send_handles(ctl.handle(), &[c.handle()], Peer(std::ptr::null_mut())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("TCP connection"), "{e}");
    }

    #[test]
    fn local_names_and_binding() {
        let name = unique_local_name();
        assert!(name.to_string_lossy().starts_with(r"\\.\pipe\mproc-"));
        let l = bind_local(&name).unwrap();
        assert!(bind_local(&name).is_err(), "the name is taken");
        std::thread::scope(|s| {
            let server = s.spawn(|| {
                let conn = l.accept().unwrap();
                frame(&conn, b"hi");
            });
            let c = connect_local(&name).unwrap();
            assert_eq!(read_exact(&c, 6), b"\x00\x00\x00\x02hi");
            server.join().unwrap();
        });
        // A bare name means the same pipe.
        let bare = PathBuf::from(format!("mproc-bare-{}", std::process::id()));
        let l2 = bind_local(&bare).unwrap();
        let full = PathBuf::from(format!(r"\\.\pipe\{}", bare.display()));
        assert!(bind_local(&full).is_err());
        drop(l2);
        l.close_in_place().unwrap();
        assert!(connect_local(&name).is_err());
    }

    #[test]
    fn private_security_descriptor_builds() {
        let sa = private_pipe_security().unwrap();
        assert!(!sa.lpSecurityDescriptor.is_null());
        assert_eq!(sa.bInheritHandle, 0);
    }
}
