//! Windows: child processes (the process handle is the sentinel), the
//! private named-pipe control channel, the parent link, a kill-on-close
//! Job Object for daemonic children.

use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle,
};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    DuplicateHandle, GetLastError, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, FALSE, GENERIC_READ,
    GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, OPEN_EXISTING, PIPE_ACCESS_DUPLEX,
    SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT, SYNCHRONIZE,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, GetNamedPipeClientProcessId,
    GetNamedPipeHandleStateW, WaitNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_BYTE, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, TerminateProcess, WaitForSingleObject, INFINITE,
};

/// The control channel's stream: a named pipe.
pub(crate) type ControlStream = std::fs::File;

/// TerminateProcess exit codes that mark mproc's own terminate and kill,
/// reported as -15 and -9 as on Unix (Windows has no signals).
const TERMINATE_CODE: u32 = 0x4D50_000F;
const KILL_CODE: u32 = 0x4D50_0009;

fn exitcode_of(code: u32) -> i32 {
    match code {
        TERMINATE_CODE => -15,
        KILL_CODE => -9,
        c => c as i32,
    }
}

fn wide(s: &str) -> Vec<u16> {
    std::ffi::OsStr::new(s)
        .encode_wide()
        .chain(std::iter::once(0))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(t) => t.as_millis().min(u128::from(INFINITE - 1)) as u32,
    }
}

/// A child process started by this process; its process handle is the
/// sentinel (signalled when it ends).
pub(crate) struct ChildProcess {
    pid: u32,
    child: Mutex<Child>,
    status: Mutex<Option<i32>>,
    handle: OwnedHandle,
}

impl ChildProcess {
    /// Re-executes this binary with the entry token in the environment and
    /// stdin from NUL; stdout and stderr are inherited.
    pub(crate) fn spawn(token_env: &str, token: &str) -> io::Result<ChildProcess> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        // Windows has no handle on the running image to execute: a binary
        // renamed or replaced meanwhile is reported by its path.
        let child = Command::new(&exe)
            .env(token_env, token)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot re-execute {}: {e}", exe.display()),
                )
            })?;
        let pid = child.id();
        let handle = child.as_handle().try_clone_to_owned()?;
        Ok(ChildProcess {
            pid,
            child: Mutex::new(child),
            status: Mutex::new(None),
            handle,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Puts a daemonic child in this process's kill-on-close Job Object:
    /// it dies with this process however this process ends.
    pub(crate) fn tie_to_parent(&self) -> io::Result<()> {
        let job = daemon_job()?;
        // SAFETY: both handles are open.
        if unsafe { AssignProcessToJobObject(job as HANDLE, self.handle.as_raw_handle() as HANDLE) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn poll(&self) -> io::Result<Option<i32>> {
        let mut status = lock(&self.status);
        if status.is_none() {
            if let Some(st) = lock(&self.child).try_wait()? {
                *status = Some(exitcode_of(st.code().unwrap_or(1) as u32));
            }
        }
        Ok(*status)
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<i32>> {
        if let Some(code) = self.poll()? {
            return Ok(Some(code));
        }
        // SAFETY: waiting on our own open process handle.
        unsafe { WaitForSingleObject(self.handle.as_raw_handle() as HANDLE, millis(timeout)) };
        self.poll()
    }

    fn end(&self, code: u32) -> io::Result<()> {
        let status = lock(&self.status);
        if status.is_some() {
            return Ok(());
        }
        // SAFETY: terminating our own child through its open handle.
        if unsafe { TerminateProcess(self.handle.as_raw_handle() as HANDLE, code) } == 0 {
            // It may have ended meanwhile (access denied on an exited process).
            if lock(&self.child).try_wait()?.is_some() {
                return Ok(());
            }
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn terminate(&self) -> io::Result<()> {
        self.end(TERMINATE_CODE)
    }

    pub(crate) fn kill(&self) -> io::Result<()> {
        self.end(KILL_CODE)
    }

    pub(crate) fn sentinel(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }

    fn raw(&self) -> usize {
        self.handle.as_raw_handle() as usize
    }
}

static DAEMON_JOB: OnceLock<usize> = OnceLock::new();

/// This process's Job Object for daemonic children (kill on close: the
/// handle closes when this process ends, however it ends).
fn daemon_job() -> io::Result<usize> {
    if let Some(j) = DAEMON_JOB.get() {
        return Ok(*j);
    }
    // SAFETY: plain Win32 calls; the job handle is kept for the process's life.
    unsafe {
        let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
        if job.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        if SetInformationJobObject(
            job,
            JobObjectExtendedLimitInformation,
            &info as *const _ as *const core::ffi::c_void,
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        match DAEMON_JOB.set(job as usize) {
            Ok(()) => Ok(job as usize),
            Err(_) => {
                drop(OwnedHandle::from_raw_handle(job as RawHandle));
                DAEMON_JOB
                    .get()
                    .copied()
                    .ok_or_else(|| io::Error::other("job"))
            }
        }
    }
}

/// Kills a child that has not finished its launch by the deadline (named
/// pipes have no read timeouts); disarmed when dropped.
pub(crate) struct LaunchDeadline {
    disarm: Option<mpsc::Sender<()>>,
}

impl LaunchDeadline {
    pub(crate) fn arm(child: &ChildProcess, deadline: Instant) -> LaunchDeadline {
        let (tx, rx) = mpsc::channel::<()>();
        let raw = child.raw();
        let spawned = std::thread::Builder::new()
            .name("mproc-launch-deadline".into())
            .spawn(move || {
                // A second after the deadline, so that a child that never
                // connects is seen as a timeout by `accept` first.
                let left =
                    (deadline + Duration::from_secs(1)).saturating_duration_since(Instant::now());
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(left) {
                    // SAFETY: the handle stays open while the launch runs
                    // (the guard is dropped before the ChildProcess).
                    unsafe { TerminateProcess(raw as HANDLE, KILL_CODE) };
                }
            });
        LaunchDeadline {
            disarm: spawned.ok().map(|_| tx),
        }
    }
}

impl Drop for LaunchDeadline {
    fn drop(&mut self) {
        if let Some(tx) = self.disarm.take() {
            let _ = tx.send(());
        }
    }
}

/// Nothing to clean: named pipes vanish with their last handle.
pub(crate) fn cleanup_runtime_dir() {}

static PIPE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A one-shot named-pipe server for one child's control connection.
pub(crate) struct ControlListener {
    name: String,
    pipe: Mutex<Option<OwnedHandle>>,
}

/// Why no control connection arrived.
pub(crate) enum AcceptFailure {
    ChildExited,
    Timeout,
    Io(io::Error),
}

impl ControlListener {
    pub(crate) fn bind() -> io::Result<ControlListener> {
        let mut rnd = [0u8; 8];
        crate::fault::random_bytes(&mut rnd)?;
        let n = PIPE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            r"\\.\pipe\mproc-{}-{}-{n}",
            std::process::id(),
            crate::hex(&rnd)
        );
        let w = wide(&name);
        // Only this user may open it (a DACL with the user's SID alone).
        let sa = mproc_ipc::sys::private_pipe_security()?;
        // SAFETY: plain Win32 call with valid attributes; the handle is
        // owned below.
        let h = unsafe {
            CreateNamedPipeW(
                w.as_ptr(),
                PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                1,
                65536,
                65536,
                0,
                &sa,
            )
        };
        if h == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle we own.
        let pipe = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
        // Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE: ours must be the
        // only instance of the name.
        let mut instances = 0u32;
        // SAFETY: a plain query with one valid out pointer.
        let ok = unsafe {
            GetNamedPipeHandleStateW(
                h,
                std::ptr::null_mut(),
                &mut instances,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if ok == 0 || instances != 1 {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("the control pipe {name} is not ours alone"),
            ));
        }
        Ok(ControlListener {
            name,
            pipe: Mutex::new(Some(pipe)),
        })
    }

    pub(crate) fn address(&self) -> String {
        self.name.clone()
    }

    /// Accepts the child's connection, racing the child's exit and the
    /// deadline. ConnectNamedPipe blocks, so it runs on a helper thread; a
    /// dummy client connection releases it when the child dies first.
    pub(crate) fn accept(
        &self,
        child: &ChildProcess,
        deadline: Instant,
    ) -> Result<ControlStream, AcceptFailure> {
        let pipe = lock(&self.pipe)
            .take()
            .ok_or_else(|| AcceptFailure::Io(io::Error::other("listener already used")))?;
        let raw = pipe.as_raw_handle() as usize;
        let child_pid = child.pid();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (tx, rx) = mpsc::channel::<io::Result<()>>();
        // The caller's scoped subscriber, if any, hears this thread too.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::Builder::new()
            .name("mproc-accept".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let r = loop {
                    // SAFETY: the pipe handle stays open until this thread
                    // reports.
                    let ok = unsafe { ConnectNamedPipe(raw as HANDLE, std::ptr::null_mut()) };
                    if ok == 0 && unsafe { GetLastError() } != ERROR_PIPE_CONNECTED {
                        break Err(io::Error::last_os_error());
                    }
                    if stopped.load(Ordering::Acquire) {
                        break Ok(());
                    }
                    let mut client = 0u32;
                    // SAFETY: a plain query on a connected pipe with one
                    // valid out pointer.
                    let known = unsafe { GetNamedPipeClientProcessId(raw as HANDLE, &mut client) };
                    if known != 0 && client == child_pid {
                        break Ok(());
                    }
                    // Refused before a byte is read or written: the
                    // intruder sees only the pipe break. The instance is
                    // free again for the child.
                    tracing::warn!(
                        client,
                        "refused a control connection from a process other than the child"
                    );
                    // SAFETY: plain Win32 call on our own pipe handle.
                    unsafe { DisconnectNamedPipe(raw as HANDLE) };
                };
                let _ = tx.send(r);
            })
            .map_err(AcceptFailure::Io)?;
        let failure = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(10))) {
                Ok(Ok(())) => return Ok(std::fs::File::from(pipe)),
                Ok(Err(e)) => return Err(AcceptFailure::Io(e)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(AcceptFailure::Io(io::Error::other("accept thread died")))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if matches!(child.poll(), Ok(Some(_))) {
                break AcceptFailure::ChildExited;
            }
            if Instant::now() >= deadline {
                break AcceptFailure::Timeout;
            }
        };
        // Release the blocked ConnectNamedPipe with a connection of our own.
        stop.store(true, Ordering::Release);
        let _dummy = connect_control(&self.name);
        let _ = rx.recv_timeout(Duration::from_secs(5));
        Err(failure)
    }
}

/// The child's side: opens the parent's named pipe.
pub(crate) fn connect_control(address: &str) -> io::Result<ControlStream> {
    let w = wide(address);
    let start = Instant::now();
    loop {
        // SAFETY: plain Win32 call; the handle is owned below.
        let h = unsafe {
            CreateFileW(
                w.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                // The server may learn who we are but never act as us.
                SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if h != INVALID_HANDLE_VALUE {
            // SAFETY: a fresh handle we own.
            return Ok(unsafe { std::fs::File::from_raw_handle(h as RawHandle) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(ERROR_PIPE_BUSY as i32)
            || start.elapsed() > Duration::from_secs(10)
        {
            return Err(err);
        }
        // SAFETY: plain Win32 call.
        unsafe { WaitNamedPipeW(w.as_ptr(), 1000) };
    }
}

/// Named pipes have no read timeouts; `LaunchDeadline` bounds the launch.
pub(crate) fn set_read_timeout(_s: &ControlStream, _t: Option<Duration>) -> io::Result<()> {
    Ok(())
}

/// Handles sent with a launch are duplicated into the child.
pub(crate) fn handle_peer(child: &ChildProcess) -> mproc_ipc::sys::Peer {
    mproc_ipc::sys::Peer(child.handle.as_raw_handle())
}

static SELF_HANDLE: OnceLock<OwnedHandle> = OnceLock::new();

/// The handle a child receives as its parent sentinel: this process, with
/// SYNCHRONIZE access (signalled when this process ends).
pub(crate) fn parent_sentinel_for_child() -> io::Result<BorrowedHandle<'static>> {
    if SELF_HANDLE.get().is_none() {
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: duplicating the pseudo-handle of this process into a real one.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                GetCurrentProcess(),
                GetCurrentProcess(),
                &mut h,
                SYNCHRONIZE,
                FALSE,
                0,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle we own.
        let _ = SELF_HANDLE.set(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) });
    }
    SELF_HANDLE
        .get()
        .map(|h| h.as_handle())
        .ok_or_else(|| io::Error::other("self handle"))
}

/// A child's view of its parent: signalled once the parent is gone.
pub(crate) struct ParentSentinel(OwnedHandle);

impl ParentSentinel {
    pub(crate) fn from_handle(h: OwnedHandle, _parent_pid: u32) -> ParentSentinel {
        ParentSentinel(h)
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        // SAFETY: waiting on an open process handle.
        let r = unsafe { WaitForSingleObject(self.0.as_raw_handle() as HANDLE, millis(timeout)) };
        Ok(r == WAIT_OBJECT_0)
    }
}

pub(crate) fn prepare_child() {}

/// Windows has no set-user-ID programs: a process of another account or
/// an elevated one gets its environment from its own profile, not from
/// the user who started it, so there is no secure mode to detect.
pub(crate) fn secure_exec() -> bool {
    false
}

/// Removes `name` from the environment. Windows keeps the environment
/// in the process's own memory (its PEB), readable by others only with
/// `PROCESS_VM_READ` on it, that is by this user's processes with rights
/// over it (which could read the token in memory anyway).
pub(crate) fn scrub_env(name: &str) {
    std::env::remove_var(name);
}

pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: ends this process at once.
    unsafe {
        TerminateProcess(GetCurrentProcess(), code as u32);
    }
    std::process::abort()
}

/// Registers `f` to run at normal exit: `main` returning, or
/// `std::process::exit` (through mproc-ipc's `ExitProcess` hook, while
/// every thread is still alive).
pub(crate) fn at_exit(f: extern "C" fn()) {
    mproc_ipc::sys::at_exit(f);
}

impl AsHandle for crate::process::Sentinel<'_> {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.handle()
    }
}

impl AsRawHandle for crate::process::Sentinel<'_> {
    fn as_raw_handle(&self) -> RawHandle {
        self.handle().as_raw_handle()
    }
}

/// Runs `$f` (an `extern "C" fn()`) as an *early* constructor: in
/// `.CRT$XCT`, which the C runtime runs before `.CRT$XCU` (sections are
/// sorted by the name after `$`), where `ctor` puts every ordinary
/// constructor, mproc's bootstrap among them; so the target registry is
/// complete when the bootstrap reads it. Used by `#[mproc::target]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __mproc_early_ctor {
    ($f:path) => {
        #[used]
        #[link_section = ".CRT$XCT"]
        static __MPROC_EARLY_CTOR: extern "C" fn() = $f;
    };
}

// ---------------------------------------------------------------------
// Remote launchers (Slurm's `srun`) are Linux/Unix only: a Windows
// cluster runs no Slurm (docs/platforms.md).

fn no_remote() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "remote launchers (srun) are not supported on Windows",
    )
}

impl ChildProcess {
    /// Not on Windows: see [`no_remote`].
    pub(crate) fn spawn_via(
        _program: &str,
        _args: &[String],
        _token_env: &str,
        _token: &str,
    ) -> io::Result<ChildProcess> {
        Err(no_remote())
    }
}

impl ControlListener {
    /// Not on Windows: see [`no_remote`].
    pub(crate) fn bind_tcp(_advertise: &str) -> io::Result<ControlListener> {
        Err(no_remote())
    }
}

/// This host's name (`COMPUTERNAME`).
pub(crate) fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}

/// Not on Windows: see [`no_remote`].
pub(crate) fn remote_parent_sentinel() -> io::Result<OwnedHandle> {
    Err(no_remote())
}
