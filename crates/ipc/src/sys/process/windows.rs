//! Windows: children whose process handle is the sentinel; a
//! kill-on-close Job Object for daemonic children.

mod create;

use std::io;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, IntoRawHandle, OwnedHandle, RawHandle,
};
use std::process::{Child as StdChild, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, IsProcessInJob, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Pipes::DisconnectNamedPipe;
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, GetExitCodeProcess, ResumeThread, SetEvent, TerminateProcess,
    WaitForMultipleObjects, WaitForSingleObject, INFINITE,
};

use super::{lock, Stop};
use crate::sys::handles::Peer;

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

/// Milliseconds for a Win32 wait (`None`: forever).
pub(in crate::sys) fn millis(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(t) => t.as_millis().min(u128::from(INFINITE - 1)) as u32,
    }
}

/// Whether this backend starts a child with an inherited channel
/// ([`ChildProcess::spawn_inheriting`](super::ChildProcess::spawn_inheriting)):
/// `CreateProcessW` with a handle list.
pub const INHERITS_CHANNEL: bool = true;

/// The OS side of a child: its process handle is the sentinel
/// (signalled when it ends).
pub(in crate::sys) struct Child {
    pid: u32,
    handle: OwnedHandle,
    /// A copy of the server end of the child's inherited launch channel,
    /// for the launch deadline guard ([`LaunchDeadline::arm`] takes it).
    channel: Mutex<Option<OwnedHandle>>,
    /// In the daemonic children's Job Object since before it ran
    /// ([`Child::spawn_inheriting`] with `daemon`).
    tied: bool,
}

impl Child {
    /// See [`ChildProcess::spawn`](super::ChildProcess::spawn).
    pub(in crate::sys) fn spawn(token_env: &str, token: &str) -> io::Result<Child> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        // Windows has no handle on the running image to execute: a binary
        // renamed or replaced meanwhile is reported by its path.
        let mut command = Command::new(&exe);
        command.env(token_env, token).stdin(Stdio::null());
        let child = spawn_retrying(|| command.spawn()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot re-execute {}: {e}", exe.display()),
            )
        })?;
        Child::adopt(child, false)
    }

    /// See [`ChildProcess::spawn_inheriting`](super::ChildProcess::spawn_inheriting).
    ///
    /// The channel is a one-instance private named pipe whose client end
    /// this process opened itself (`control_pair`): no one else can
    /// connect. The client end is inheritable only during the
    /// `CreateProcessW` call, and listed in its
    /// `PROC_THREAD_ATTRIBUTE_HANDLE_LIST` with the standard handles:
    /// this child inherits exactly those. A `Command` that another thread
    /// spawns during the call (std serialises only its own spawns) does
    /// inherit it: then the child's death does not end the channel, which
    /// is why [`LaunchDeadline`] also watches the child's process handle.
    ///
    /// A `daemon` child is created suspended (`CREATE_SUSPENDED`), put in
    /// the kill-on-close Job Object, then resumed: it is in the job from
    /// its first instruction, and so is any process it starts. If either
    /// step fails, the child (which ran nothing) is killed.
    pub(in crate::sys) fn spawn_inheriting(
        token_env: &str,
        token: &dyn Fn(u64) -> String,
        daemon: bool,
    ) -> io::Result<(Child, crate::sys::control::ControlStream)> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let (ours, theirs) = crate::sys::stream::imp::pipe::control_pair()?;
        let value = theirs.as_raw_handle() as usize as u64;
        let env = create::environment_block(token_env, &token(value))?;
        let watch = ours.try_clone()?;
        let raw = theirs.as_raw_handle() as HANDLE;
        // SAFETY: a flag change on our own open handle.
        if unsafe { SetHandleInformation(raw, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let created = spawn_retrying(|| create::create(&exe, &env, &[raw], daemon));
        // The child has its end (or failed): ours would keep its end of
        // file away, and must never reach another child.
        drop(theirs);
        let created = created.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot re-execute {}: {e}", exe.display()),
            )
        })?;
        if let Some(thread) = &created.suspended {
            if let Err(e) = start_in_job(&created.process, thread) {
                // SAFETY: our own child's open handle; it ran nothing.
                unsafe { TerminateProcess(created.process.as_raw_handle() as HANDLE, KILL_CODE) };
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot put the daemonic child in this process's job: {e}"),
                ));
            }
        }
        let child = Child {
            pid: created.pid,
            handle: created.process,
            channel: Mutex::new(Some(watch)),
            tied: daemon,
        };
        Ok((child, std::fs::File::from(ours)))
    }

    /// Remote launchers (Slurm's `srun`) are Linux/Unix only: a Windows
    /// cluster runs no Slurm (docs/platforms.md).
    pub(in crate::sys) fn spawn_via(
        _program: &str,
        _args: &[String],
        _token_env: &str,
        _token: &str,
    ) -> io::Result<Child> {
        Err(crate::sys::control::imp::no_remote())
    }

    /// Takes over a child started with std's `Command` (its process
    /// handle; pipes to it, if any, close).
    pub(in crate::sys) fn adopt(child: StdChild, _via_launcher: bool) -> io::Result<Child> {
        let pid = child.id();
        // SAFETY: the process handle std's `Child` owned, now ours alone.
        let handle = unsafe { OwnedHandle::from_raw_handle(child.into_raw_handle()) };
        Ok(Child {
            pid,
            handle,
            channel: Mutex::new(None),
            tied: false,
        })
    }

    pub(in crate::sys) fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit code once the process handle is signalled (a process
    /// has no zombie state to reap on Windows).
    pub(in crate::sys) fn try_reap(&self) -> io::Result<Option<i32>> {
        let h = self.handle.as_raw_handle() as HANDLE;
        // SAFETY: a zero-time wait on our own open process handle.
        match unsafe { WaitForSingleObject(h, 0) } {
            WAIT_OBJECT_0 => {}
            WAIT_TIMEOUT => return Ok(None),
            _ => return Err(io::Error::last_os_error()),
        }
        let mut code = 0u32;
        // SAFETY: as above, with a valid out pointer.
        if unsafe { GetExitCodeProcess(h, &mut code) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(exitcode_of(code)))
    }

    pub(in crate::sys) fn wait_ended(&self, timeout: Option<Duration>) -> io::Result<()> {
        // SAFETY: waiting on our own open process handle.
        unsafe { WaitForSingleObject(self.handle.as_raw_handle() as HANDLE, millis(timeout)) };
        Ok(())
    }

    pub(in crate::sys) fn stop(&self, how: Stop) -> io::Result<()> {
        let code = match how {
            Stop::Terminate => TERMINATE_CODE,
            Stop::Kill => KILL_CODE,
        };
        // SAFETY: terminating our own child through its open handle.
        if unsafe { TerminateProcess(self.handle.as_raw_handle() as HANDLE, code) } == 0 {
            // It may have ended meanwhile (access denied on an exited process).
            if self.try_reap()?.is_some() {
                return Ok(());
            }
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(in crate::sys) fn sentinel(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }

    /// Puts a daemonic child in this process's kill-on-close Job Object:
    /// it dies with this process however this process ends. Nothing to do
    /// for one created in it.
    pub(in crate::sys) fn tie_to_parent(&self) -> io::Result<()> {
        if self.tied {
            return Ok(());
        }
        into_daemon_job(&self.handle)
    }

    /// Handles sent with a launch are duplicated into the child.
    pub(in crate::sys) fn peer(&self) -> Peer {
        Peer(self.handle.as_raw_handle())
    }
}

/// `ERROR_INTERNAL_ERROR`: what Wine's `NtCreateUserProcess` returns when
/// the new process died before it reported its start (under load, its
/// loader dies before any code of the program ran).
const ERROR_INTERNAL_ERROR: i32 = 1359;

/// How many times a spawn is tried while the child dies in its loader.
const SPAWN_ATTEMPTS: usize = 3;

/// Whether a failed spawn's child provably ran none of this program's
/// code, so that starting it again is safe: it took no entry token and
/// read no launch record ([`ERROR_INTERNAL_ERROR`]).
fn died_in_loader(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_INTERNAL_ERROR)
}

/// Runs `spawn` again (at most [`SPAWN_ATTEMPTS`] times in all) while it
/// fails because the child died in its loader; any other outcome is
/// returned as it is. A failed `CreateProcessW` hands back no handle, and
/// std closes the ones it opened for the attempt: nothing stays behind.
fn spawn_retrying<T>(mut spawn: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 1;
    loop {
        match spawn() {
            Err(e) if died_in_loader(&e) && attempt < SPAWN_ATTEMPTS => {
                tracing::warn!(
                    attempt,
                    error = %e,
                    "the child died before it started (CreateProcessW): starting it again"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Puts the process `process` in this process's daemonic children's Job
/// Object.
fn into_daemon_job(process: &OwnedHandle) -> io::Result<()> {
    let job = daemon_job()?;
    // SAFETY: both handles are open.
    if unsafe { AssignProcessToJobObject(job as HANDLE, process.as_raw_handle() as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A child created suspended: into the daemonic children's Job Object,
/// then its first thread `thread` resumed.
fn start_in_job(process: &OwnedHandle, thread: &OwnedHandle) -> io::Result<()> {
    into_daemon_job(process)?;
    // SAFETY: the child's first thread, suspended once by CreateProcessW.
    if unsafe { ResumeThread(thread.as_raw_handle() as HANDLE) } == u32::MAX {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// See [`in_a_job_object`](super::in_a_job_object).
pub(in crate::sys) fn in_a_job_object() -> Option<bool> {
    let mut inside = 0;
    // SAFETY: a query on this process's pseudo-handle, a valid out
    // pointer; a null job means any job.
    let ok = unsafe { IsProcessInJob(GetCurrentProcess(), std::ptr::null_mut(), &mut inside) };
    (ok != 0).then_some(inside != 0)
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
///
/// For a child holding an inherited channel it also watches the child's
/// process handle: once the child has ended and nothing it wrote is left
/// to read, the channel is disconnected, so that the launch's blocked
/// read or write fails at once even when a stranger holds a copy of the
/// child's end (a `Command` spawned by another thread during our
/// `CreateProcessW`), which would keep the end of file away.
pub struct LaunchDeadline {
    disarm: Option<Arc<OwnedHandle>>,
}

/// Polls, after the child ended, for what it wrote to be read.
const DRAIN_POLL: Duration = Duration::from_millis(5);

impl LaunchDeadline {
    /// Arms the guard for `child`'s launch, which must end by `deadline`.
    pub fn arm(child: &super::ChildProcess, deadline: Instant) -> LaunchDeadline {
        // SAFETY: a manual-reset, unnamed event; owned below.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if event.is_null() {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "no launch deadline guard: cannot create an event"
            );
            return LaunchDeadline { disarm: None };
        }
        // SAFETY: a fresh handle we own.
        let event = Arc::new(unsafe { OwnedHandle::from_raw_handle(event as RawHandle) });
        let disarmed = event.clone();
        // The thread's own copy of the process handle: it may still use it
        // after the launch ended and the `ChildProcess` closed its own
        // (disarming does not wait for the thread), and a closed handle's
        // value can name another process by then.
        let process = match child.os.handle.try_clone() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "no launch deadline guard: cannot copy the process handle");
                return LaunchDeadline { disarm: None };
            }
        };
        let channel = lock(&child.os.channel).take();
        let spawned = std::thread::Builder::new()
            .name("mproc-launch-deadline".into())
            .spawn(move || guard(&process, &disarmed, channel, deadline));
        LaunchDeadline {
            disarm: spawned.ok().map(|_| event),
        }
    }
}

/// The guard thread of [`LaunchDeadline`].
fn guard(
    process: &OwnedHandle,
    disarmed: &OwnedHandle,
    channel: Option<OwnedHandle>,
    deadline: Instant,
) {
    let event = disarmed.as_raw_handle() as HANDLE;
    let process = process.as_raw_handle() as HANDLE;
    let waits = [event, process];
    // A second after the deadline, so that a child that never connects
    // is seen as a timeout by `accept` first.
    let left = (deadline + Duration::from_secs(1)).saturating_duration_since(Instant::now());
    // SAFETY: both handles are this thread's own (the event shared with
    // the guard), open until it returns.
    let woke = unsafe { WaitForMultipleObjects(2, waits.as_ptr(), 0, millis(Some(left))) };
    if woke == WAIT_OBJECT_0 {
        return;
    }
    if woke != WAIT_OBJECT_0 + 1 {
        // SAFETY: as above.
        unsafe { TerminateProcess(process, KILL_CODE) };
        // Termination is asynchronous: until the process has ended it
        // may still write, and "nothing unread" below would not be final.
        // SAFETY: as above.
        if unsafe { WaitForMultipleObjects(2, waits.as_ptr(), 0, INFINITE) } == WAIT_OBJECT_0 {
            return;
        }
    }
    let Some(channel) = channel else {
        return;
    };
    let h = channel.as_raw_handle() as HANDLE;
    loop {
        // On our own copy of the server end.
        if matches!(crate::sys::stream::imp::pipe::unread(h), None | Some(0)) {
            // The child is gone and all it wrote has been read: nothing
            // more can come. Fail the launch's read or write now.
            // SAFETY: plain Win32 call on our own copy of the server end.
            unsafe { DisconnectNamedPipe(h) };
            return;
        }
        // SAFETY: a timed wait on our own event.
        if unsafe { WaitForSingleObject(event, millis(Some(DRAIN_POLL))) } == WAIT_OBJECT_0 {
            return;
        }
    }
}

impl Drop for LaunchDeadline {
    fn drop(&mut self) {
        if let Some(event) = self.disarm.take() {
            // SAFETY: setting our own open event.
            unsafe { SetEvent(event.as_raw_handle() as HANDLE) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spawn that fails with `errors` in turn, then succeeds; counts
    /// its calls.
    fn attempts_of(errors: &[i32]) -> (io::Result<()>, usize) {
        let mut calls = 0;
        let result = spawn_retrying(|| {
            calls += 1;
            match errors.get(calls - 1) {
                Some(&code) => Err(io::Error::from_raw_os_error(code)),
                None => Ok(()),
            }
        });
        (result, calls)
    }

    #[test]
    fn spawn_retrying_starts_again_only_a_child_that_died_in_its_loader() {
        // Two loader deaths, then a start: three calls, success.
        let (result, calls) = attempts_of(&[ERROR_INTERNAL_ERROR, ERROR_INTERNAL_ERROR]);
        assert!(result.is_ok());
        assert_eq!(calls, 3);
        // Bounded: the third loader death is returned.
        let (result, calls) = attempts_of(&[ERROR_INTERNAL_ERROR; 5]);
        assert_eq!(calls, SPAWN_ATTEMPTS);
        assert_eq!(
            result.err().and_then(|e| e.raw_os_error()),
            Some(ERROR_INTERNAL_ERROR)
        );
        // Any other failure (file not found, access denied) is final.
        for code in [2, 5] {
            let (result, calls) = attempts_of(&[code, ERROR_INTERNAL_ERROR]);
            assert_eq!(calls, 1);
            assert_eq!(result.err().and_then(|e| e.raw_os_error()), Some(code));
        }
        // A first success is not repeated.
        assert_eq!(attempts_of(&[]).1, 1);
    }
}
