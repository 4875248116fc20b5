//! Windows: children whose process handle is the sentinel; a
//! kill-on-close Job Object for daemonic children.

use std::io;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle,
};
use std::process::{Child as StdChild, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{TerminateProcess, WaitForSingleObject, INFINITE};

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

/// Whether this backend starts a child with an inherited channel: not
/// yet (docs/platforms.md).
pub const INHERITS_CHANNEL: bool = false;

/// The OS side of a child: its process handle is the sentinel
/// (signalled when it ends).
pub(in crate::sys) struct Child {
    pid: u32,
    child: Mutex<StdChild>,
    handle: OwnedHandle,
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

    /// Not yet on Windows (`CreateProcessW` with a handle list is the
    /// way; docs/platforms.md): launches use the named control pipe.
    pub(in crate::sys) fn spawn_inheriting(
        _token_env: &str,
        _token: &dyn Fn(u64) -> String,
    ) -> io::Result<(Child, crate::sys::control::ControlStream)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no inherited launch channel on Windows yet",
        ))
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

    /// Takes over a child started with std's `Command`.
    pub(in crate::sys) fn adopt(child: StdChild, _via_launcher: bool) -> io::Result<Child> {
        let pid = child.id();
        let handle = child.as_handle().try_clone_to_owned()?;
        Ok(Child {
            pid,
            child: Mutex::new(child),
            handle,
        })
    }

    pub(in crate::sys) fn pid(&self) -> u32 {
        self.pid
    }

    pub(in crate::sys) fn try_reap(&self) -> io::Result<Option<i32>> {
        Ok(lock(&self.child)
            .try_wait()?
            .map(|st| exitcode_of(st.code().unwrap_or(1) as u32)))
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
            if lock(&self.child).try_wait()?.is_some() {
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
    /// it dies with this process however this process ends.
    pub(in crate::sys) fn tie_to_parent(&self) -> io::Result<()> {
        let job = daemon_job()?;
        // SAFETY: both handles are open.
        if unsafe { AssignProcessToJobObject(job as HANDLE, self.handle.as_raw_handle() as HANDLE) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Handles sent with a launch are duplicated into the child.
    pub(in crate::sys) fn peer(&self) -> Peer {
        Peer(self.handle.as_raw_handle())
    }

    fn raw(&self) -> usize {
        self.handle.as_raw_handle() as usize
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
pub struct LaunchDeadline {
    disarm: Option<mpsc::Sender<()>>,
}

impl LaunchDeadline {
    /// Arms the guard for `child`'s launch, which must end by `deadline`.
    pub fn arm(child: &super::ChildProcess, deadline: Instant) -> LaunchDeadline {
        let (tx, rx) = mpsc::channel::<()>();
        let raw = child.os.raw();
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
