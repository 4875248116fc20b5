//! Why a child failed to start: [`LaunchFailure`]. The launcher thread
//! that finishes a launch makes it; the child's `ChildState`
//! (`started.rs`) keeps it, and every `join` of that child (a `Process`'s,
//! a `JoinHandle`'s, a pool's check of its worker) reports it again as
//! the public [`Error::ChildFailed`].

use std::time::Duration;

use mproc_ipc::Error;

use crate::sys::ChildProcess;

/// A child (or a job step's `srun`) that failed to start: its pid, how it
/// ended, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LaunchFailure {
    /// The child's pid (a job step's: its `srun`'s).
    pub(crate) pid: u32,
    /// How it ended: "exitcode 121", "did not exit; killed", ...
    pub(crate) status: String,
    /// What went wrong.
    pub(crate) why: String,
}

impl LaunchFailure {
    /// The failure of `child` for `why`, with its exit status; a child
    /// still running after a grace period is killed so that nothing is
    /// left behind.
    pub(crate) fn of(child: &ChildProcess, why: &str) -> LaunchFailure {
        let status = match child.wait(Some(Duration::from_secs(2))) {
            Ok(Some(-9)) => "exitcode -9 (killed)".to_string(),
            Ok(Some(code)) => format!("exitcode {code}"),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait(Some(Duration::from_secs(2)));
                "did not exit; killed".to_string()
            }
            Err(e) => format!("status unknown: {e}"),
        };
        LaunchFailure {
            pid: child.pid(),
            status,
            why: why.to_string(),
        }
    }

    /// The public error: [`Error::ChildFailed`] with the pid, the status
    /// and why.
    pub(crate) fn to_error(&self) -> Error {
        Error::ChildFailed {
            pid: self.pid,
            status: self.status.clone(),
            reason: self.why.clone(),
        }
    }
}

impl From<LaunchFailure> for Error {
    fn from(failure: LaunchFailure) -> Error {
        failure.to_error()
    }
}
