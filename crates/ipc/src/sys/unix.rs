//! Unix: file descriptors, SCM_RIGHTS handle transfer, poll.

mod shm;
mod sync;

pub use shm::{unlink_named, Mapping};
pub use sync::{handle_value, import_handle, thread_identity, Acquired, SyncBlock};

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// An owned OS handle (a file descriptor here).
pub type OwnedHandle = OwnedFd;
/// A borrowed OS handle.
pub type BorrowedHandle<'a> = BorrowedFd<'a>;
/// A raw OS handle value.
pub type RawHandle = RawFd;

/// At most this many descriptors ride on one `sendmsg` (Linux's SCM_MAX_FD is 253).
const FDS_PER_MESSAGE: usize = 64;

extern "C" {
    // The C library's `atexit`.
    fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
}

/// Registers `hook` to run at normal exit (`main` returning, or
/// `std::process::exit`), in reverse order of registration (the C
/// library's `atexit`). Returns whether it was registered.
///
/// `hook` must not unwind.
pub fn at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: `atexit` with a plain `extern "C" fn()`; the caller promises
    // it does not unwind.
    unsafe { atexit(hook) == 0 }
}

/// Borrows a raw descriptor that the caller keeps open for `'a`.
///
/// # Safety
/// `raw` must be an open descriptor that outlives the borrow.
pub unsafe fn borrow_raw<'a>(raw: RawHandle) -> BorrowedHandle<'a> {
    BorrowedFd::borrow_raw(raw)
}

/// The raw value of a borrowed handle.
pub fn raw_of(h: BorrowedHandle<'_>) -> RawHandle {
    h.as_raw_fd()
}

/// Where handles are sent: on Unix the socket itself carries them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer;

/// Sends `handles` over the Unix socket `sock` (SCM_RIGHTS, one marker byte
/// per batch). The receiver calls [`recv_handles`] with the same count.
pub fn send_handles(
    sock: BorrowedFd<'_>,
    handles: &[BorrowedFd<'_>],
    _peer: Peer,
) -> io::Result<()> {
    for chunk in handles.chunks(FDS_PER_MESSAGE) {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(chunk)) {
            return Err(io::Error::other("cannot build SCM_RIGHTS message"));
        }
        let byte = [b'H'];
        loop {
            match rustix::net::sendmsg(
                sock,
                &[IoSlice::new(&byte)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(1) => break,
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Receives `n` handles sent by [`send_handles`].
pub fn recv_handles(sock: BorrowedFd<'_>, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let got = loop {
            match rustix::net::recvmsg(
                sock,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed while sending handles",
            ));
        }
        let before = out.len();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                out.extend(fds);
            }
        }
        if out.len() == before {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected handles, got none",
            ));
        }
    }
    Ok(out)
}

/// Waits until one of `fds` is readable (or hung up); returns the indices
/// of the ready ones, empty on timeout. `None` waits forever.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(0) => return Ok(Vec::new()),
            Ok(_) => {
                let ready: Vec<usize> = pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect();
                return Ok(ready);
            }
            Err(rustix::io::Errno::INTR) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Ok(Vec::new());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Duplicates a handle (close-on-exec).
pub fn duplicate(h: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    h.try_clone_to_owned()
}

/// Takes ownership of a raw handle.
///
/// # Safety
/// `raw` must be an open descriptor owned by nobody else.
pub unsafe fn own_raw(raw: RawHandle) -> OwnedFd {
    OwnedFd::from_raw_fd(raw)
}

/// Borrows any `AsFd`.
pub fn borrow<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}

// ---------------------------------------------------------------------------
// Connections: the OS side of `Connection`, `pipe`, `Listener` and `Client`.
//
// The interface a `sys/windows.rs` mirrors:
//
// - `Stream`: one end of a connection (here a Unix or TCP socket; on
//   Windows a named pipe or a socket), always a byte stream: `read`,
//   `read_to_spare`, `write_frame`, `poll_readable`, `handle`,
//   `close_in_place`, `close_keeps_handle`, `from_owned`, and
//   `Read`/`Write` for `&Stream` (the handshake). Reads see a connection
//   reset as end of file; writes to a closed peer are
//   `ErrorKind::BrokenPipe` and never raise a signal.
// - `stream_pair()`: two connected ends (CPython's `Pipe()`).
// - `Acceptor`: a listening endpoint (`bind_local`, `bind_tcp`, `accept`,
//   `close_in_place`); `connect_local`, `connect_tcp`; `remove_local`,
//   `unique_local_name`, `LOCAL_SCHEME`.
// - `AsFd`/`AsRawFd` for `Connection` (`AsHandle`/`AsRawHandle` there).
// ---------------------------------------------------------------------------

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The textual scheme of a local address (`unix:/tmp/sock`).
pub const LOCAL_SCHEME: &str = "unix";

/// Flags for every `send` on a stream: a closed peer is `EPIPE`, never a
/// SIGPIPE death.
#[cfg(not(target_vendor = "apple"))]
const STREAM_SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(target_vendor = "apple")]
const STREAM_SEND_FLAGS: SendFlags = SendFlags::empty();

/// One end of a connection: a Unix or TCP socket, always a byte stream
/// (`SOCK_STREAM`), as CPython's: a `pipe()` end is a Unix stream
/// socketpair, which a Python process (or any code reading the descriptor
/// as CPython does: 4 header bytes, then the payload) reads as CPython's
/// `Pipe()`.
///
/// Every method takes `&self`: callers serialise readers and writers
/// themselves (a `Connection` holds a lock for each direction).
#[derive(Debug)]
pub struct Stream {
    fd: OwnedFd,
}

/// Creates two connected ends (close-on-exec), both able to carry
/// SCM_RIGHTS and to be polled: a `SOCK_STREAM` socketpair (CPython's
/// `Pipe()`).
pub fn stream_pair() -> io::Result<(Stream, Stream)> {
    let (a, b) = UnixStream::pair()?;
    Ok((Stream::new(a.into())?, Stream::new(b.into())?))
}

impl Stream {
    fn new(fd: OwnedFd) -> io::Result<Stream> {
        #[cfg(target_vendor = "apple")]
        rustix::net::sockopt::set_socket_nosigpipe(&fd, true)?;
        Ok(Stream { fd })
    }

    /// Wraps a handle received from another process (a connected stream
    /// socket). A socket that keeps record boundaries (`SOCK_SEQPACKET`,
    /// `SOCK_DGRAM`) is refused: frames are read as a byte stream, and a
    /// read shorter than a record would lose the record's rest.
    pub fn from_owned(h: OwnedHandle) -> io::Result<Stream> {
        let kind = rustix::net::sockopt::socket_type(&h)?;
        if kind != rustix::net::SocketType::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a stream socket ({kind:?}): a connection is a byte stream"),
            ));
        }
        Stream::new(h)
    }

    /// The OS handle, for polling, `fileno` and handle transfer.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        self.fd.as_fd()
    }

    /// Reads at most `buf.len()` bytes; `Ok(0)` is end of file. A reset
    /// connection reads as end of file; interrupted reads are retried.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        retry_read(|| rustix::io::read(&self.fd, &mut *buf))
    }

    /// Reads at most `max` bytes into the spare capacity of `buf`,
    /// appending them; `Ok(0)` is end of file. No byte of `buf` is
    /// initialised before the OS fills it.
    pub fn read_to_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        if buf.capacity() == buf.len() {
            buf.reserve(1);
        }
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max);
        let target = &mut spare[..want];
        let n = retry_read(|| rustix::io::read(&self.fd, &mut *target).map(|(f, _)| f.len()))?;
        // SAFETY: the OS initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Writes one frame, `header` then `payload`, completely, as one
    /// gathered write (the payload is never copied; a frame the socket
    /// buffer holds goes out in one system call). A closed peer is
    /// `ErrorKind::BrokenPipe`.
    pub fn write_frame(&self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[header, payload])
    }

    /// Writes the concatenation of `parts` completely on a byte stream,
    /// with as few system calls as the OS allows (one `sendmsg` gathers
    /// every part).
    fn write_all_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        const MAX_SLICES: usize = 8;
        let mut index = 0; // first part not completely written
        let mut offset = 0; // bytes of `parts[index]` already written
        while index < parts.len() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, part) in parts[index..].iter().enumerate().take(MAX_SLICES) {
                let start = if i == 0 { offset } else { 0 };
                slices[i] = IoSlice::new(&part[start..]);
                count += 1;
            }
            let written = retry_write(|| {
                rustix::net::sendmsg(
                    &self.fd,
                    &slices[..count],
                    &mut SendAncillaryBuffer::default(),
                    STREAM_SEND_FLAGS,
                )
            })?;
            if written == 0 && slices[..count].iter().any(|s| !s.is_empty()) {
                return Err(io::ErrorKind::WriteZero.into());
            }
            super::advance_parts(parts, &mut index, &mut offset, written);
        }
        Ok(())
    }

    /// Waits until the stream has data or end of file (`None` waits
    /// forever, `Some(ZERO)` returns at once). Never consumes anything.
    pub fn poll_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        Ok(!poll_readable(&[self.handle()], timeout)?.is_empty())
    }

    /// Closes the stream while keeping its handle value reserved until the
    /// `Stream` is dropped: the peer sees end of file (once no other process
    /// holds the socket), later I/O fails, and a handle borrowed from
    /// `&self` never names an unrelated, reused descriptor.
    ///
    /// An unconnected socket is put in the descriptor's place (`dup3`).
    pub fn close_in_place(&self) -> io::Result<()> {
        replace_in_place(&self.fd, &inert_socket()?)
    }

    /// Whether [`close_in_place`](Self::close_in_place) keeps the handle
    /// value reserved until drop: always, here.
    pub fn close_keeps_handle(&self) -> bool {
        true
    }
}

/// Runs a read system call, retrying interrupted ones. A reset
/// connection reads as end of file, after the data still queued: Linux
/// reports `ECONNRESET` once when the peer closed with unread data of its
/// own (after the queued bytes on a `SOCK_STREAM` socket), so the read is
/// retried.
fn retry_read<T: Default>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    let mut resets = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::CONNRESET) if resets < 3 => resets += 1,
            Err(rustix::io::Errno::CONNRESET) => return Ok(T::default()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs a write system call, retrying interrupted ones; a closed or reset
/// peer is `BrokenPipe`.
fn retry_write(mut f: impl FnMut() -> rustix::io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
                return Err(io::ErrorKind::BrokenPipe.into())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An unconnected socket: what a closed handle's value names until drop.
fn inert_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Puts `by` in place of `fd` (which stays open, now naming what `by`
/// names).
fn replace_in_place(fd: &OwnedFd, by: &OwnedFd) -> io::Result<()> {
    // SAFETY: the temporary `OwnedFd` aliases `fd` and is never dropped
    // (`ManuallyDrop`), so `fd` keeps sole ownership of the descriptor;
    // `dup3` only changes what the descriptor refers to.
    let mut alias = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) });
    rustix::io::dup3(by, &mut alias, rustix::io::DupFlags::CLOEXEC)?;
    Ok(())
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        retry_write(|| rustix::net::send(&self.fd, buf, STREAM_SEND_FLAGS))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[buf])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening endpoint: a Unix socket bound to a path, or a TCP socket.
#[derive(Debug)]
pub struct Acceptor {
    fd: OwnedFd,
}

/// Binds a Unix socket at `path` and listens. Fails if `path` exists.
pub fn bind_local(path: &Path) -> io::Result<Acceptor> {
    let l = UnixListener::bind(path)?;
    Ok(Acceptor { fd: l.into() })
}

/// Binds a TCP socket and listens; returns the bound address (the real
/// port when `addr` asked for port 0).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<(Acceptor, SocketAddr)> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    Ok((Acceptor { fd: l.into() }, local))
}

impl Acceptor {
    /// Waits for one connection.
    pub fn accept(&self) -> io::Result<Stream> {
        loop {
            match rustix::net::accept_with(&self.fd, rustix::net::SocketFlags::CLOEXEC) {
                Ok(fd) => {
                    // TCP only; a Unix socket refuses the option, harmlessly.
                    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
                    return Stream::new(fd);
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stops listening: a blocked `accept` in another thread returns an
    /// error, later ones fail, and the handle value stays reserved until
    /// drop (see [`Stream::close_in_place`]).
    pub fn close_in_place(&self) -> io::Result<()> {
        // Wakes a blocked accept (Linux); a listener has one holder.
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
        replace_in_place(&self.fd, &inert_socket()?)
    }
}

/// Connects to a Unix socket at `path`.
pub fn connect_local(path: &Path) -> io::Result<Stream> {
    Stream::new(UnixStream::connect(path)?.into())
}

/// Connects to a TCP address (Nagle off: every frame goes out at once).
pub fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Stream::new(s.into())
}

/// Removes a local listener's name (the socket file) once it is closed.
pub fn remove_local(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::debug!(path = %path.display(), "cannot remove the socket file: {e}");
        }
    }
}

/// A fresh, unused local socket name: `<tmp>/mproc-<pid>-<n>-<random>.sock`
/// (CPython's `arbitrary_address('AF_UNIX')`).
pub fn unique_local_name() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 6];
    // A failure leaves zeros: the pid and counter still make it unique.
    let _ = getrandom::getrandom(&mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!(
        "mproc-{}-{}-{random}.sock",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

impl AsFd for crate::Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream().handle()
    }
}

impl AsRawFd for crate::Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.stream().handle().as_raw_fd()
    }
}

/// The file in a private directory whose `flock` its creator holds for
/// its whole life: the proof of life [`owner_is_gone`] tests.
const LIFE_LOCK: &str = "lock";

/// Life locks of the directories this process made: open (and locked)
/// until it ends, whatever way it ends.
static LIFE_LOCKS: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Creates a directory only this user may enter (mode 0700), holding a
/// lock in it for the rest of this process's life (see [`owner_is_gone`]).
/// Errors name the path.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let named = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| named("create the private directory", path, e))?;
    // Locked under a temporary name, then renamed: a sweeper never finds
    // the life lock unlocked while its owner lives.
    let pending = path.join(".lock-pending");
    let fd = rustix::fs::open(
        &pending,
        rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::EXCL
            | rustix::fs::OFlags::RDWR
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| named("create the life lock", &pending, e.into()))?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| named("lock", &pending, e.into()))?;
    let lock = path.join(LIFE_LOCK);
    std::fs::rename(&pending, &lock).map_err(|e| named("rename the life lock to", &lock, e))?;
    LIFE_LOCKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(fd);
    Ok(())
}

/// Removes a private directory this process made with
/// [`create_private_dir`] (its life lock, then the directory, which must
/// be otherwise empty).
pub fn remove_private_dir(path: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(path.join(LIFE_LOCK));
    std::fs::remove_dir(path)
}

/// Removes a private directory of another process, if that process is
/// gone ([`owner_is_gone`]) and the directory is otherwise empty.
pub fn remove_dead_private_dir(path: &Path) -> io::Result<()> {
    if !owner_is_gone(path) {
        return Err(io::Error::other(format!(
            "{}: its owner may be alive",
            path.display()
        )));
    }
    remove_private_dir(path)
}

/// Whether the process that made the private directory `dir` (with
/// [`create_private_dir`]) has ended, proved by its life lock being free:
/// true for no other reason. Pids prove nothing here (a process in
/// another PID namespace sharing the temp directory has a pid that means
/// nothing in this one). A symlink, a directory of another user, or one
/// without a life lock (being made, or made by an older mproc) is never
/// reported gone.
pub fn owner_is_gone(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.file_type().is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        return false;
    }
    let Ok(fd) = rustix::fs::open(
        dir.join(LIFE_LOCK),
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    // Our lock, if we get it, goes with `fd` when this returns.
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Makes a socket file readable and writable by this user only (0600).
pub fn make_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Whether [`send_handles`] can pass these handles to another process:
/// every descriptor can on Unix.
pub fn check_sendable(_handles: &[BorrowedFd<'_>]) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    /// Reads exactly `n` bytes, as CPython's `_recv(n)` does.
    fn read_exactly(s: &Stream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            let k = s.read(&mut got[filled..]).unwrap();
            assert!(k > 0, "early end of file");
            filled += k;
        }
        got
    }

    #[test]
    fn pipe_ends_are_byte_streams_and_survive_a_transfer() {
        let (a, b) = stream_pair().unwrap();
        assert_eq!(
            rustix::net::sockopt::socket_type(&a.fd).unwrap(),
            rustix::net::SocketType::STREAM
        );
        // CPython's reader: 4 header bytes, then the payload; two frames
        // written back to back are read apart, nothing lost.
        a.write_frame(&[0, 0, 0, 5], b"hello").unwrap();
        a.write_frame(&[0, 0, 0, 5], b"world").unwrap();
        for word in [b"hello", b"world"] {
            assert_eq!(read_exactly(&b, 4), [0, 0, 0, 5]);
            assert_eq!(read_exactly(&b, 5), word);
        }
        let again = Stream::from_owned(duplicate(a.handle()).unwrap()).unwrap();
        again.write_frame(&[0, 0, 0, 1], b"x").unwrap();
        assert_eq!(read_exactly(&b, 5), b"\x00\x00\x00\x01x");
    }

    #[test]
    fn a_record_keeping_socket_is_refused() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        for kind in [SocketType::SEQPACKET, SocketType::DGRAM] {
            let Ok((s, _t)) =
                rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
            else {
                continue;
            };
            let e = Stream::from_owned(s).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }

    #[test]
    fn reset_reads_as_end_of_file_after_queued_data() {
        let (a, b) = stream_pair().unwrap();
        b.write_frame(&[0, 0, 0, 1], b"u").unwrap(); // never read by `a`
        a.write_frame(&[0, 0, 0, 1], b"q").unwrap();
        drop(a);
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).unwrap();
        assert!(n > 0, "queued data first");
        let mut total = n;
        while total < 5 {
            total += b.read(&mut buf[total..]).unwrap();
        }
        assert_eq!(&buf[..5], b"\x00\x00\x00\x01q");
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        let e = b.write_frame(&[0, 0, 0, 1], b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn close_in_place_keeps_the_number_and_ends_the_peer() {
        let (a, b) = stream_pair().unwrap();
        let raw = a.handle().as_raw_fd();
        a.close_in_place().unwrap();
        assert_eq!(a.handle().as_raw_fd(), raw);
        assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(a.write_frame(&[0, 0, 0, 0], b"").is_err());
    }
}
