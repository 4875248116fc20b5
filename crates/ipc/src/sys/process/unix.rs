//! Unix: children with a pidfd as sentinel, reaped by this process or
//! by the forkserver (which reports the exit code on a status pipe).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child as StdChild, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::{lock, Stop};
use crate::sys::handles::Peer;
use crate::sys::poll::poll_readable;

/// CPython's exit code for a finished child: the code, or `-signum`.
fn exitcode_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => -sig,
        (None, None) => 1,
    }
}

/// The OS side of a child: its pid and a pidfd that becomes readable
/// when it ends (its sentinel).
pub(in crate::sys) struct Child {
    pid: u32,
    reaper: Reaper,
    pidfd: OwnedFd,
    /// The process held is a launcher (`srun`) whose task runs elsewhere:
    /// its exit code after `terminate`/`kill` is the launcher's own
    /// (137 for a cancelled step), not CPython's -15 / -9.
    via_launcher: bool,
    /// The signal `terminate`/`kill` delivered while the child ran (0:
    /// none), for `via_launcher`.
    stopped_by: AtomicI32,
}

/// Who reaps the child: this process (started by std's `Command`, or by
/// `posix_spawn` with an inherited channel: reaped by pid), or the
/// forkserver, which writes the exit code to a status pipe
/// (`sys/forkserver/unix.rs`).
enum Reaper {
    Own(Mutex<StdChild>),
    Spawned,
    Server(OwnedFd),
}

/// Whether this backend starts a child with an inherited channel
/// ([`ChildProcess::spawn_inheriting`](super::ChildProcess::spawn_inheriting)).
pub const INHERITS_CHANNEL: bool = true;

impl Child {
    /// See [`ChildProcess::spawn`](super::ChildProcess::spawn).
    pub(in crate::sys) fn spawn(token_env: &str, token: &str) -> io::Result<Child> {
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
        Child::adopt(child, false)
    }

    /// See [`ChildProcess::spawn_inheriting`](super::ChildProcess::spawn_inheriting).
    ///
    /// `posix_spawn` (no `pre_exec`, so glibc's `clone(CLONE_VFORK)`
    /// path): both ends of the socket pair are close-on-exec in this
    /// process, so a spawn on another thread meanwhile inherits neither;
    /// a file action `dup2`s the child's end, in the child alone, onto
    /// the number of a second close-on-exec descriptor of ours (a `dup2`
    /// onto a different number clears close-on-exec there, on every libc;
    /// a number open here is one no descriptor the child inherits uses).
    pub(in crate::sys) fn spawn_inheriting(
        token_env: &str,
        token: &dyn Fn(u64) -> String,
        _daemon: bool,
    ) -> io::Result<(Child, UnixStream)> {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let at = rustix::io::fcntl_dupfd_cloexec(&theirs, 3)?;
        let token = token(at.as_raw_fd() as u64);
        let cstr = |b: &[u8]| {
            CString::new(b).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a NUL byte in an exec argument",
                )
            })
        };
        let image = cstr(running_image(&exe).as_os_str().as_bytes())?;
        // argv[0] stays the program's own path, as at its first start.
        let argv0 = cstr(exe.as_os_str().as_bytes())?;
        // This environment (read under std's lock, as `Command` does)
        // with the token set.
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k.as_bytes() == token_env.as_bytes() {
                continue;
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(cstr(&kv)?);
        }
        env.push(cstr(format!("{token_env}={token}").as_bytes())?);
        let pid =
            posix_spawn(&image, &argv0, &env, theirs.as_raw_fd(), at.as_raw_fd()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot re-execute {}: {e}", exe.display()),
                )
            })?;
        // The child has its end: ours would keep its end of file away.
        drop(theirs);
        drop(at);
        let pidfd = match Pid::from_raw(pid).map(|p| pidfd_open(p, PidfdFlags::empty())) {
            // Our child, not yet reaped: the pid names it.
            Some(Ok(fd)) => fd,
            failed => {
                // No sentinel, no child: it must not run on unwatched.
                // SAFETY: plain syscalls on our own unreaped child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(match failed {
                    Some(Err(e)) => io::Error::new(
                        io::Error::from(e).kind(),
                        format!("no pidfd for the child: {e}"),
                    ),
                    _ => io::Error::other("invalid child pid"),
                });
            }
        };
        let child = Child {
            pid: pid as u32,
            reaper: Reaper::Spawned,
            pidfd,
            via_launcher: false,
            stopped_by: AtomicI32::new(0),
        };
        Ok((child, UnixStream::from(ours)))
    }

    /// See [`ChildProcess::spawn_via`](super::ChildProcess::spawn_via).
    pub(in crate::sys) fn spawn_via(
        program: &str,
        args: &[String],
        token_env: &str,
        token: &str,
    ) -> io::Result<Child> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let child = Command::new(program)
            .args(args)
            .arg(&exe)
            .env(token_env, token)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
        Child::adopt(child, true)
    }

    /// Takes over a child started with std's `Command`.
    pub(in crate::sys) fn adopt(child: StdChild, via_launcher: bool) -> io::Result<Child> {
        let pid = child.id();
        let raw = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("invalid child pid"))?;
        // The child is ours and not yet reaped, so its pid cannot be reused.
        let pidfd = pidfd_open(raw, PidfdFlags::empty())?;
        Ok(Child {
            pid,
            reaper: Reaper::Own(Mutex::new(child)),
            pidfd,
            via_launcher,
            stopped_by: AtomicI32::new(0),
        })
    }

    /// A child the forkserver forked: its pidfd (opened by the server
    /// before it could reap it) and the pipe its exit code comes on.
    pub(in crate::sys) fn forked(pid: u32, pidfd: OwnedFd, status: OwnedFd) -> Child {
        Child {
            pid,
            reaper: Reaper::Server(status),
            pidfd,
            via_launcher: false,
            stopped_by: AtomicI32::new(0),
        }
    }

    /// The exit code to report for a reaped child. A launcher that this
    /// process terminated or killed while it ran reports what a local
    /// child would, -15 / -9 (as the Windows backend does), not its own
    /// code for the cancelled step (`srun`: 137), unless it ended with 0:
    /// then its task had finished cleanly before the signal.
    fn settle(&self, code: i32) -> i32 {
        let sig = self.stopped_by.load(Ordering::Acquire);
        if self.via_launcher && sig != 0 && code != 0 {
            -sig
        } else {
            code
        }
    }

    pub(in crate::sys) fn pid(&self) -> u32 {
        self.pid
    }

    pub(in crate::sys) fn try_reap(&self) -> io::Result<Option<i32>> {
        match &self.reaper {
            Reaper::Own(c) => Ok(lock(c).try_wait()?.map(|st| self.settle(exitcode_of(st)))),
            Reaper::Spawned => {
                let mut status = 0;
                loop {
                    // SAFETY: waitpid writes the status into a valid i32;
                    // the pid is our child's, reaped only here, once
                    // (under the status lock, which caches the code).
                    let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
                    if r == 0 {
                        return Ok(None);
                    }
                    if r > 0 {
                        return Ok(Some(self.settle(exitcode_of(ExitStatus::from_raw(status)))));
                    }
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            Reaper::Server(pipe) => {
                if poll_readable(&[self.pidfd.as_fd()], Some(Duration::ZERO))?.is_empty() {
                    return Ok(None);
                }
                let code = crate::sys::forkserver::imp::read_status(pipe)?;
                Ok(Some(self.settle(code)))
            }
        }
    }

    pub(in crate::sys) fn wait_ended(&self, timeout: Option<Duration>) -> io::Result<()> {
        poll_readable(&[self.pidfd.as_fd()], timeout).map(drop)
    }

    pub(in crate::sys) fn stop(&self, how: Stop) -> io::Result<()> {
        let sig = match how {
            Stop::Terminate => Signal::TERM,
            Stop::Kill => Signal::KILL,
        };
        // The pidfd names this very process, reaped or not.
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

    pub(in crate::sys) fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Daemonic children are tied to the parent by their watchdog (the
    /// parent pipe), which needs nothing here.
    pub(in crate::sys) fn tie_to_parent(&self) -> io::Result<()> {
        Ok(())
    }

    /// Handles sent with a launch go over the control socket itself.
    pub(in crate::sys) fn peer(&self) -> Peer {
        Peer
    }
}

/// `posix_spawn(image, [argv0], env)` with stdin from the null device,
/// `channel` duplicated onto `at` in the child, and signals as std's
/// `Command` leaves them (an empty mask, SIGPIPE at its default).
fn posix_spawn(
    image: &CString,
    argv0: &CString,
    env: &[CString],
    channel: i32,
    at: i32,
) -> io::Result<i32> {
    let argv = [argv0.as_ptr().cast_mut(), std::ptr::null_mut()];
    let envp: Vec<*mut libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    };
    // SAFETY: the file actions and attributes are initialised before use
    // and destroyed once, on every path; every pointer passed (paths,
    // argv, envp: NUL-terminated strings in null-terminated arrays) lives
    // until `posix_spawn` returns, which copies what it keeps.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let mut pid: libc::pid_t = 0;
        let result = (|| {
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                channel,
                at,
            ))?;
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            let mut set: libc::sigset_t = std::mem::zeroed();
            check(libc::sigemptyset(&mut set))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr, &set))?;
            check(libc::sigaddset(&mut set, libc::SIGPIPE))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &set))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as _,
            ))?;
            check(libc::posix_spawn(
                &mut pid,
                image.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            ))
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result.map(|()| pid)
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

/// Unix control sockets have read timeouts; nothing to arm.
pub struct LaunchDeadline;

impl LaunchDeadline {
    /// Nothing to arm on Unix (see the module's documentation).
    pub fn arm(_child: &super::ChildProcess, _deadline: Instant) -> LaunchDeadline {
        LaunchDeadline
    }
}

/// Unix has no Job Objects (a daemonic child's watchdog ties it).
pub(in crate::sys) fn in_a_job_object() -> Option<bool> {
    None
}
