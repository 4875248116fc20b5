//! Unix: the control listener is a Unix socket in this process's private
//! runtime directory (or a TCP socket for a child on another host).

use crate::util::hex::hex;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sys::poll::poll_readable;
use crate::sys::process::ChildProcess;

/// The control channel's stream.
pub type ControlStream = UnixStream;

// ---------------------------------------------------------------------
// The private runtime directory and the control listener.

static RUNTIME_DIR: OnceLock<PathBuf> = OnceLock::new();
static SOCKET_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This process's private directory (0700) for its control sockets, in
/// [`runtime_base`]. It holds a lock for this process's whole life (see
/// `crate::sys::dirs::create_private_dir`), which is what tells others it
/// is alive.
fn runtime_dir() -> io::Result<&'static Path> {
    if let Some(d) = RUNTIME_DIR.get() {
        return Ok(d);
    }
    let mut rnd = [0u8; 6];
    getrandom::getrandom(&mut rnd)
        .map_err(|e| io::Error::other(format!("cannot read random bytes from the OS: {e}")))?;
    let base = runtime_base();
    let dir = base.join(format!("mproc-{}-{}", std::process::id(), hex(&rnd)));
    remove_stale_runtime_dirs(&base);
    if base != std::env::temp_dir() {
        // Queue brokers put their directories in the temp directory.
        remove_stale_runtime_dirs(&std::env::temp_dir());
    }
    crate::sys::dirs::create_private_dir(&dir)?;
    match RUNTIME_DIR.set(dir) {
        Ok(()) => {}
        Err(dir) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    RUNTIME_DIR
        .get()
        .map(PathBuf::as_path)
        .ok_or_else(|| io::Error::other("runtime dir"))
}

/// Where runtime directories go: `$XDG_RUNTIME_DIR` when it is set and
/// usable (an absolute path to a real directory of this user that only
/// this user may enter, as the XDG spec requires), else the temp
/// directory.
fn runtime_base() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        let xdg = PathBuf::from(xdg);
        let usable = xdg.is_absolute()
            && std::fs::symlink_metadata(&xdg).is_ok_and(|m| {
                m.file_type().is_dir()
                    && m.uid() == rustix::process::geteuid().as_raw()
                    && m.mode() & 0o077 == 0
            });
        if usable {
            return xdg;
        }
        tracing::debug!(path = %xdg.display(), "XDG_RUNTIME_DIR unusable; using the temp directory");
    }
    std::env::temp_dir()
}

/// Removes the runtime directories, in `base`, of processes that ended
/// without their exit procedure (SIGKILL, a crash): `mproc-<pid>-<random>`
/// directories of this user whose life lock is free. Death is proved by
/// the lock alone, never by the pid (which names another process, or
/// none, when the owner runs in another PID namespace sharing the temp
/// directory); symlinks and other users' directories are left alone.
fn remove_stale_runtime_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|n| n.strip_prefix("mproc-"))
            .and_then(|n| n.split_once('-'))
            .is_some_and(|(pid, rest)| {
                pid.parse::<u32>().is_ok()
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_hexdigit())
            });
        if ours && crate::sys::dirs::owner_is_gone(&entry.path()) {
            tracing::debug!(path = %entry.path().display(), "removing a dead process's runtime directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes this process's runtime directory now if it does not exist yet
/// (sweeping those of dead processes: the first `start()` does it, even
/// one whose child needs no control socket).
pub fn prepare_runtime_dir() -> io::Result<()> {
    runtime_dir().map(drop)
}

/// Removes this process's runtime directory (at exit).
pub fn cleanup_runtime_dir() {
    if let Some(d) = RUNTIME_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A one-shot listener for one child's control connection, removed from
/// the file system when dropped.
pub struct ControlListener {
    listener: Bound,
    /// The socket file (empty for a TCP listener).
    path: PathBuf,
    /// The `host:port` a remote child connects to (TCP only).
    advertised: Option<String>,
}

/// A control listener's socket: local, or TCP for a child that a remote
/// launcher places on another host.
enum Bound {
    Local(UnixListener),
    Tcp(std::net::TcpListener),
}

impl Bound {
    fn accept(&self) -> io::Result<UnixStream> {
        match self {
            Bound::Local(l) => l.accept().map(|(s, _)| s),
            Bound::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                keepalive(&s);
                // The control stream is a byte stream either way: read,
                // write and read timeouts on a TCP socket's descriptor
                // behave as on a Unix socket's.
                Ok(UnixStream::from(OwnedFd::from(s)))
            }
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Bound::Local(l) => l.as_fd(),
            Bound::Tcp(l) => l.as_fd(),
        }
    }
}

/// Why no control connection arrived.
pub enum AcceptFailure {
    /// The child ended first.
    ChildExited,
    /// The deadline passed.
    Timeout,
    /// The OS failed.
    Io(io::Error),
}

impl ControlListener {
    /// A local listener in this process's private runtime directory
    /// (the socket file is 0600 as well).
    pub fn bind() -> io::Result<ControlListener> {
        let n = SOCKET_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = runtime_dir()?.join(format!("c{n}.sock"));
        let named = |e: io::Error| {
            io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        };
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(named)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(named)?;
        listener.set_nonblocking(true)?;
        Ok(ControlListener {
            listener: Bound::Local(listener),
            path,
            advertised: None,
        })
    }

    /// A TCP listener on every interface, for a child on another host;
    /// `advertise` is the host name (or address) the child connects to.
    pub fn bind_tcp(advertise: &str) -> io::Result<ControlListener> {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        Ok(ControlListener {
            listener: Bound::Tcp(listener),
            path: PathBuf::new(),
            advertised: Some(format!("tcp:{advertise}:{port}")),
        })
    }

    /// The address a child connects to (goes into its entry token).
    pub fn address(&self) -> String {
        match &self.advertised {
            Some(a) => a.clone(),
            None => self.path.to_string_lossy().into_owned(),
        }
    }

    /// Accepts the child's connection, racing the child's exit and the
    /// deadline: never a hang.
    pub fn accept(
        &self,
        child: &ChildProcess,
        deadline: Instant,
    ) -> Result<ControlStream, AcceptFailure> {
        loop {
            match self.listener.accept() {
                Ok(s) => {
                    // A remote child's peer is not a local process: the
                    // handshake alone decides.
                    let remote = matches!(self.listener, Bound::Tcp(_));
                    if !remote && !connected_by(&s, child) {
                        // Refused before a byte is read or written: the
                        // intruder sees only the connection close.
                        tracing::warn!(
                            "refused a control connection from a process other than the child"
                        );
                        continue;
                    }
                    s.set_nonblocking(false).map_err(AcceptFailure::Io)?;
                    return Ok(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(AcceptFailure::Io(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AcceptFailure::Timeout);
            }
            let ready = poll_readable(&[self.listener.as_fd(), child.sentinel()], Some(left))
                .map_err(AcceptFailure::Io)?;
            if ready.contains(&1) && !ready.contains(&0) {
                return Err(AcceptFailure::ChildExited);
            }
        }
    }
}

/// Whether the peer of a control connection is the child itself. Where
/// the kernel names a Unix socket's peer process (Linux), any other
/// process is refused before the handshake, even one that learned the
/// secret; elsewhere the peer must be this user (the directory is 0700)
/// and the handshake decides.
fn connected_by(s: &UnixStream, child: &ChildProcess) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        match rustix::net::sockopt::socket_peercred(s) {
            Ok(cred) => cred.pid.as_raw_nonzero().get() as u32 == child.pid(),
            Err(e) => {
                tracing::debug!("no peer credentials on a control connection: {e}");
                false
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (s, child);
        true
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if matches!(self.listener, Bound::Local(_)) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The child's side: connects to the parent's control listener (a
/// `tcp:host:port` address for a child a remote launcher placed).
pub fn connect_control(address: &str) -> io::Result<ControlStream> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{address}: {e}"));
    if let Some(hostport) = address.strip_prefix("tcp:") {
        let s = std::net::TcpStream::connect(hostport).map_err(named)?;
        s.set_nodelay(true)?;
        keepalive(&s);
        return Ok(UnixStream::from(OwnedFd::from(s)));
    }
    UnixStream::connect(address).map_err(named)
}

/// TCP keepalive on a remote child's control channel: a node that is
/// lost (powered off, cut from the network) sends no FIN, and without
/// probes its connection would look alive forever. With these, either
/// side sees the connection fail within about 25 s (10 s idle, then 3
/// probes 5 s apart): the pool fails the worker's task and replaces it,
/// a daemonic child sees its parent gone. Best effort (an OS without the
/// options keeps its defaults).
fn keepalive(s: &std::net::TcpStream) {
    let _ = rustix::net::sockopt::set_socket_keepalive(s, true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = rustix::net::sockopt::set_tcp_keepidle(s, Duration::from_secs(10));
        let _ = rustix::net::sockopt::set_tcp_keepintvl(s, Duration::from_secs(5));
        let _ = rustix::net::sockopt::set_tcp_keepcnt(s, 3);
    }
}

/// This host's name, as another host of the cluster reaches it.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Whether a failed read or write on a control stream means its peer is
/// gone (the channel ended), as an end of file does.
pub fn channel_ended(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Sets a read timeout on the control stream (None: blocking).
pub fn set_read_timeout(s: &ControlStream, t: Option<Duration>) -> io::Result<()> {
    s.set_read_timeout(t)
}

/// Sets a write timeout on the control stream (None: blocking): a launch
/// record larger than the socket's buffer, for a child that never reads.
pub fn set_write_timeout(s: &ControlStream, t: Option<Duration>) -> io::Result<()> {
    s.set_write_timeout(t)
}

/// The process that made a forkserver's forked child's channel (the
/// parent that asked the server for it), set by the server in the forked
/// child before the child takes its channel; 0 in every other process,
/// whose channel's maker is its OS parent.
static CHANNEL_FROM: AtomicI32 = AtomicI32::new(0);

/// In a forked child of the forkserver: its channel must have been made
/// by process `launcher` (from the kernel's `SO_PEERCRED` of the server's
/// request channel, never from anything the child's environment says).
pub(in crate::sys) fn expect_channel_from(launcher: i32) {
    CHANNEL_FROM.store(launcher, Ordering::Relaxed);
}

/// The child's side of an inherited channel: takes descriptor `value`,
/// named by the entry token, as its control stream, after checking that
/// it is what the parent hands over (`ChildProcess::spawn_inheriting`):
/// not a standard stream, open, a connected Unix stream socket, and (on
/// Linux, where the kernel names a socket pair's creator) one whose
/// other end the parent made (for a forkserver's forked child: the
/// process that asked the server for it, see `expect_channel_from`). It becomes close-on-exec before anything
/// else can start a process. Must run before any other thread exists
/// (the constructor): the descriptor is taken over.
pub fn adopt_inherited_channel(value: u64) -> io::Result<ControlStream> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let fd =
        i32::try_from(value).map_err(|_| refuse(format!("descriptor {value} is out of range")))?;
    if fd <= 2 {
        return Err(refuse(format!("descriptor {fd} is a standard stream")));
    }
    // SAFETY: fstat on any number is sound: a closed one is EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer for the call to fill.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("descriptor {fd} is not open: {e}"),
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(refuse(format!("descriptor {fd} is not a socket")));
    }
    // SAFETY: the descriptor is open (fstat above) and stays open while
    // borrowed here: nothing else in this process runs yet.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind = rustix::net::sockopt::socket_type(borrowed)?;
    let local = rustix::net::getsockname(borrowed)
        .map(|a| a.address_family() == rustix::net::AddressFamily::UNIX)
        .unwrap_or(false);
    if kind != rustix::net::SocketType::STREAM || !local {
        return Err(refuse(format!(
            "descriptor {fd} is not a Unix stream socket"
        )));
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let parent = match CHANNEL_FROM.load(Ordering::Relaxed) {
            0 => rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()),
            launcher => launcher,
        };
        let peer = rustix::net::sockopt::socket_peercred(borrowed)
            .map_or(0, |c| c.pid.as_raw_nonzero().get());
        if peer != parent {
            return Err(refuse(format!(
                "descriptor {fd} is not a channel from this process's parent \
                 (its peer is process {peer}, the parent is {parent})"
            )));
        }
    }
    // SAFETY: checked above to be the channel the parent handed to this
    // process alone; from here on it is owned here.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod remote_tests {
    use super::*;

    /// Both ends of a remote child's control channel (TCP) probe the peer
    /// (keepalive): a lost node is noticed.
    #[test]
    fn remote_control_channel_has_keepalive_on_both_ends() {
        let listener = ControlListener::bind_tcp("127.0.0.1").unwrap();
        let address = listener.address();
        assert!(address.starts_with("tcp:127.0.0.1:"), "{address}");
        let child = connect_control(&address).unwrap();
        let parent = loop {
            match listener.listener.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poll_readable(&[listener.listener.as_fd()], None).unwrap();
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        for end in [&child, &parent] {
            assert!(rustix::net::sockopt::socket_keepalive(end).unwrap());
            assert_eq!(
                rustix::net::sockopt::tcp_keepidle(end).unwrap(),
                Duration::from_secs(10)
            );
        }
    }
}
