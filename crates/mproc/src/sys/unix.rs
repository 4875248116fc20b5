//! Unix: child processes (with a pidfd as sentinel), the private control
//! socket, the parent link and signals.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mproc_ipc::sys::poll_readable;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// The control channel's stream.
pub(crate) type ControlStream = UnixStream;

/// CPython's exit code for a finished child: the code, or `-signum`.
fn exitcode_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => -sig,
        (None, None) => 1,
    }
}

/// A child process started by this process, with a pidfd that becomes
/// readable when it ends (its sentinel).
pub(crate) struct ChildProcess {
    pid: u32,
    child: Reaper,
    status: Mutex<Option<i32>>,
    pidfd: OwnedFd,
    /// The process held is a launcher (`srun`) whose task runs elsewhere:
    /// its exit code after `terminate`/`kill` is the launcher's own
    /// (137 for a cancelled step), not CPython's -15 / -9.
    via_launcher: bool,
    /// The signal `terminate`/`kill` delivered while the child ran (0:
    /// none), for `via_launcher`.
    stopped_by: AtomicI32,
}

/// Who reaps the child: this process (re-exec), or the forkserver, which
/// writes the exit code to a status pipe (`forkserver_unix.rs`).
enum Reaper {
    Own(Mutex<Child>),
    Server(OwnedFd),
}

impl ChildProcess {
    /// Re-executes this binary with the entry token in the environment and
    /// stdin from /dev/null; stdout and stderr are inherited.
    ///
    /// On Linux the running image itself (`/proc/self/exe`) is executed:
    /// a `cargo build` or a package upgrade that replaced or deleted the
    /// file meanwhile changes nothing (and the build mark still matches).
    /// Elsewhere the file at `current_exe()` is, and an error names it.
    pub(crate) fn spawn(token_env: &str, token: &str) -> io::Result<ChildProcess> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let mut command = Command::new(running_image(&exe));
        // argv[0] stays the program's own path, as at its first start.
        command.arg0(&exe);
        let child = command
            .env(token_env, token)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot re-execute {}: {e}", exe.display()),
                )
            })?;
        ChildProcess::adopt(child, false)
    }

    /// Starts `program args.. <this executable's path>` with the entry token
    /// in the environment: a launcher (`srun`) that runs this program
    /// elsewhere. The process this holds is the launcher's, whose exit
    /// code is the remote child's.
    pub(crate) fn spawn_via(
        program: &str,
        args: &[String],
        token_env: &str,
        token: &str,
    ) -> io::Result<ChildProcess> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let child = Command::new(program)
            .args(args)
            .arg(&exe)
            .env(token_env, token)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
        ChildProcess::adopt(child, true)
    }

    fn adopt(child: Child, via_launcher: bool) -> io::Result<ChildProcess> {
        let pid = child.id();
        let raw = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("invalid child pid"))?;
        // The child is ours and not yet reaped, so its pid cannot be reused.
        let pidfd = pidfd_open(raw, PidfdFlags::empty())?;
        Ok(ChildProcess {
            pid,
            child: Reaper::Own(Mutex::new(child)),
            status: Mutex::new(None),
            pidfd,
            via_launcher,
            stopped_by: AtomicI32::new(0),
        })
    }

    /// A child the forkserver forked: its pidfd (opened by the server
    /// before it could reap it) and the pipe its exit code comes on.
    pub(super) fn forked(pid: u32, pidfd: OwnedFd, status: OwnedFd) -> ChildProcess {
        ChildProcess {
            pid,
            child: Reaper::Server(status),
            status: Mutex::new(None),
            pidfd,
            via_launcher: false,
            stopped_by: AtomicI32::new(0),
        }
    }

    /// Reaps the child, which has ended (its pidfd is readable).
    fn reap(&self) -> io::Result<i32> {
        let code = match &self.child {
            Reaper::Own(c) => exitcode_of(lock(c).wait()?),
            Reaper::Server(pipe) => super::forkserver::read_status(pipe)?,
        };
        Ok(self.settle(code))
    }

    /// The exit code to report for a reaped child. A launcher that this
    /// process terminated or killed while it ran reports what a local
    /// child would, -15 / -9 (as the Windows backend does), not
    /// its own code for the cancelled step (`srun`: 137), unless it ended
    /// with 0: then its task had finished cleanly before the signal.
    fn settle(&self, code: i32) -> i32 {
        let sig = self.stopped_by.load(Ordering::Acquire);
        if self.via_launcher && sig != 0 && code != 0 {
            -sig
        } else {
            code
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit code if the child has ended (reaping it), else `None`.
    pub(crate) fn poll(&self) -> io::Result<Option<i32>> {
        let mut status = lock(&self.status);
        if status.is_none() {
            match &self.child {
                Reaper::Own(c) => {
                    if let Some(st) = lock(c).try_wait()? {
                        *status = Some(self.settle(exitcode_of(st)));
                    }
                }
                Reaper::Server(_) => {
                    if !poll_readable(&[self.pidfd.as_fd()], Some(Duration::ZERO))?.is_empty() {
                        *status = Some(self.reap()?);
                    }
                }
            }
        }
        Ok(*status)
    }

    /// Waits up to `timeout` (`None`: forever) for the child to end.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<i32>> {
        if let Some(code) = self.poll()? {
            return Ok(Some(code));
        }
        let ready = poll_readable(&[self.pidfd.as_fd()], timeout)?;
        if ready.is_empty() {
            return self.poll();
        }
        // Readable pidfd: the child has ended; reap it.
        let mut status = lock(&self.status);
        if status.is_none() {
            *status = Some(self.reap()?);
        }
        Ok(*status)
    }

    fn signal(&self, sig: Signal) -> io::Result<()> {
        // Holding the status lock means nobody reaps the child meanwhile,
        // and the pidfd names this very process in any case.
        let status = lock(&self.status);
        if status.is_some() {
            return Ok(());
        }
        match pidfd_send_signal(&self.pidfd, sig) {
            Ok(()) => {
                // Only the first signal counts, as for a local child
                // (a kill after a terminate that already ended it).
                let _ = self.stopped_by.compare_exchange(
                    0,
                    sig.as_raw(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                Ok(())
            }
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// SIGTERM (exitcode -15); a no-op once the child has ended.
    pub(crate) fn terminate(&self) -> io::Result<()> {
        self.signal(Signal::TERM)
    }

    /// SIGKILL (exitcode -9); a no-op once the child has ended.
    pub(crate) fn kill(&self) -> io::Result<()> {
        self.signal(Signal::KILL)
    }

    /// The sentinel: readable once the child has ended.
    pub(crate) fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// What to execute to start this very program again.
fn running_image(exe: &Path) -> PathBuf {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = exe;
        PathBuf::from("/proc/self/exe")
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        exe.to_path_buf()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------
// The private runtime directory and the control listener.

static RUNTIME_DIR: OnceLock<PathBuf> = OnceLock::new();
static SOCKET_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This process's private directory (0700) for its control sockets, in
/// [`runtime_base`]. It holds a lock for this process's whole life (see
/// `mproc_ipc::sys::create_private_dir`), which is what tells others it
/// is alive.
fn runtime_dir() -> io::Result<&'static Path> {
    if let Some(d) = RUNTIME_DIR.get() {
        return Ok(d);
    }
    let mut rnd = [0u8; 6];
    crate::fault::random_bytes(&mut rnd)?;
    let base = runtime_base();
    let dir = base.join(format!("mproc-{}-{}", std::process::id(), crate::hex(&rnd)));
    remove_stale_runtime_dirs(&base);
    if base != std::env::temp_dir() {
        // Queue brokers put their directories in the temp directory.
        remove_stale_runtime_dirs(&std::env::temp_dir());
    }
    mproc_ipc::sys::create_private_dir(&dir)?;
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
        if ours && mproc_ipc::sys::owner_is_gone(&entry.path()) {
            tracing::debug!(path = %entry.path().display(), "removing a dead process's runtime directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes this process's runtime directory (at exit).
pub(crate) fn cleanup_runtime_dir() {
    if let Some(d) = RUNTIME_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A one-shot listener for one child's control connection, removed from
/// the file system when dropped.
pub(crate) struct ControlListener {
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
pub(crate) enum AcceptFailure {
    /// The child ended first.
    ChildExited,
    /// The deadline passed.
    Timeout,
    /// The OS failed.
    Io(io::Error),
}

impl ControlListener {
    pub(crate) fn bind() -> io::Result<ControlListener> {
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
    pub(crate) fn bind_tcp(advertise: &str) -> io::Result<ControlListener> {
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
    pub(crate) fn address(&self) -> String {
        match &self.advertised {
            Some(a) => a.clone(),
            None => self.path.to_string_lossy().into_owned(),
        }
    }

    /// Accepts the child's connection, racing the child's exit and the
    /// deadline: never a hang.
    pub(crate) fn accept(
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
pub(crate) fn connect_control(address: &str) -> io::Result<ControlStream> {
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
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A parent sentinel for a child on another host: never ready (the
/// parent's end of it does not cross hosts; the scheduler ends the child
/// with its step instead).
pub(crate) fn remote_parent_sentinel() -> io::Result<OwnedFd> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // The write end stays open for the life of this process.
    std::mem::forget(w);
    Ok(r)
}

/// Sets a read timeout on the control stream (None: blocking).
pub(crate) fn set_read_timeout(s: &ControlStream, t: Option<Duration>) -> io::Result<()> {
    s.set_read_timeout(t)
}

/// Handles sent with a launch go over the control socket itself.
pub(crate) fn handle_peer(_child: &ChildProcess) -> mproc_ipc::sys::Peer {
    mproc_ipc::sys::Peer
}

// ---------------------------------------------------------------------
// The parent link: a pipe whose write end only the parent holds. A child
// gets the read end; it reads EOF once the parent is gone, whatever way it
// died. `parent_process().is_alive()` and the daemon watchdog use it.

static PARENT_PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

/// The handle a child receives as its parent sentinel.
pub(crate) fn parent_sentinel_for_child() -> io::Result<BorrowedFd<'static>> {
    if PARENT_PIPE.get().is_none() {
        let pair = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let _ = PARENT_PIPE.set(pair);
    }
    PARENT_PIPE
        .get()
        .map(|(r, _)| r.as_fd())
        .ok_or_else(|| io::Error::other("parent pipe"))
}

/// A child's view of its parent: ready (readable) once the parent is gone.
pub(crate) struct ParentSentinel(OwnedFd);

impl ParentSentinel {
    pub(crate) fn from_handle(h: OwnedFd, _parent_pid: u32) -> ParentSentinel {
        ParentSentinel(h)
    }

    /// Waits up to `timeout` for the parent to end; true if it has.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        Ok(!poll_readable(&[self.0.as_fd()], timeout)?.is_empty())
    }
}

/// Signals and other process-wide settings a child needs before its target
/// runs (the child may start before std's own runtime set-up).
pub(crate) fn prepare_child() {
    // Rust's main ignores SIGPIPE; a child started from a constructor has
    // not been through that yet: writes to a closed peer must be EPIPE.
    // SAFETY: setting a signal disposition to SIG_IGN is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Whether the kernel started this process in secure mode: set-user-ID,
/// set-group-ID or with file capabilities (`getauxval(AT_SECURE)`, the
/// rule of glibc's `secure_getenv`; `issetugid()` on the BSDs and macOS;
/// elsewhere real and effective ids differ).
pub(crate) fn secure_exec() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: getauxval only reads the auxiliary vector.
        unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
    }
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))]
    {
        // SAFETY: issetugid has no arguments and only reads process state.
        unsafe { libc::issetugid() != 0 }
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    )))]
    {
        rustix::process::getuid() != rustix::process::geteuid()
            || rustix::process::getgid() != rustix::process::getegid()
    }
}

/// Removes `name` from the environment, and on Linux also wipes its bytes
/// (name and value) in place, in the string the environment array points
/// at: for a variable inherited at exec that is the process's initial
/// environment block, which is what `/proc/<pid>/environ` shows other
/// processes. Must run before any other thread exists (a constructor).
pub(crate) fn scrub_env(name: &str) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    wipe_env_entries(name);
    // Elsewhere the variable goes from the array only; on Linux there is
    // nothing left to remove by now.
    std::env::remove_var(name);
}

/// Wipes every "NAME=value" string of `name` in the C library's
/// environment array, then takes its pointer out of the array (as
/// `unsetenv` does), without freeing anything.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn wipe_env_entries(name: &str) {
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    let prefix = format!("{name}=");
    // SAFETY: no other thread runs (constructor), so nothing else reads or
    // changes the array or its strings meanwhile. The array is
    // null-terminated and each entry is a NUL-terminated string that
    // stays allocated and writable for the process's life: the initial
    // block on the stack, or a string the C library allocated and never
    // frees while it is in the array. Each string is wiped while it is
    // still in the array, then its slot is closed up by moving the later
    // pointers (and the terminating null) down one place.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return;
        }
        while !(*p).is_null() {
            let entry = std::ffi::CStr::from_ptr(*p);
            if !entry.to_bytes().starts_with(prefix.as_bytes()) {
                p = p.add(1);
                continue;
            }
            std::ptr::write_bytes((*p).cast::<u8>(), 0, entry.to_bytes().len());
            let mut q = p;
            loop {
                *q = *q.add(1);
                if (*q).is_null() {
                    break;
                }
                q = q.add(1);
            }
        }
    }
}

/// Ends this process at once, without running exit handlers (the daemon
/// watchdog, when the parent is gone).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Registers `f` to run at normal process exit (after `main` returns or at
/// `std::process::exit`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    mproc_ipc::sys::at_exit(f);
}

impl AsFd for crate::process::Sentinel<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle()
    }
}

impl AsRawFd for crate::process::Sentinel<'_> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.handle().as_raw_fd()
    }
}

impl ChildProcess {
    /// Daemonic children are tied to the parent by their watchdog (the
    /// parent pipe), which needs nothing here.
    pub(crate) fn tie_to_parent(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Unix control sockets have read timeouts; nothing to arm.
pub(crate) struct LaunchDeadline;

impl LaunchDeadline {
    pub(crate) fn arm(_child: &ChildProcess, _deadline: Instant) -> LaunchDeadline {
        LaunchDeadline
    }
}

/// Runs `$f` (an `extern "C" fn()`) as an *early* constructor: on ELF in
/// an `.init_array` priority section, which runs before every
/// constructor without a priority (mproc's bootstrap among them, `ctor`'s
/// plain `.init_array`), so the target registry is complete when the
/// bootstrap reads it. (On Apple platforms constructors have no order:
/// not a supported platform, see docs/platforms.md.) Used by
/// `#[mproc::target]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __mproc_early_ctor {
    ($f:path) => {
        #[used]
        #[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
        #[cfg_attr(not(target_vendor = "apple"), link_section = ".init_array.00200")]
        static __MPROC_EARLY_CTOR: extern "C" fn() = $f;
    };
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
