//! A job step of n tasks: n children started by one `srun` (a remote
//! [`Launcher`]), each connecting back over TCP and launched as any
//! child is (the mutual HMAC over the one-time secret, the launch
//! record, the acknowledgement). Each task says which task of the step it
//! is (`SLURM_PROCID`, in its [`Hello`]) and gets that task's launch
//! record; a rank out of range or seen twice fails the step.
//!
//! The parent sees no remote process: a task is known by what it told
//! ([`Hello`]) and by its connection; the step by its `srun`, whose end
//! (SIGTERM cancels the step at once) ends every task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mproc_ipc::{Error, Result};

use super::failure::LaunchFailure;
use super::parent::{accept_proven, deadline_after, handshake_and_send, start_timeout};
use super::record::{Hello, LaunchRecord, PROTOCOL, TOKEN_ENV};
use crate::remote::Launcher;
use crate::sys::{AcceptFailure, ChildProcess, ControlStream};

/// One `srun` and its tasks.
pub(crate) struct Step {
    srun: ChildProcess,
    tasks: usize,
    cancelled: AtomicBool,
}

impl Step {
    /// Ends the step: SIGTERM to `srun`, which cancels it (every task).
    pub(crate) fn cancel(&self) -> std::io::Result<()> {
        self.cancelled.store(true, Ordering::Release);
        self.srun.terminate()
    }

    /// `srun`'s exit code: the task's for a step of one task; for more,
    /// once they all ended. Waits for it for a step of one task, and for
    /// a cancelled step (`srun` ends once its tasks have).
    pub(crate) fn exitcode(&self) -> Option<i32> {
        if self.tasks == 1 || self.cancelled.load(Ordering::Acquire) {
            self.srun.wait(None).ok().flatten()
        } else {
            self.srun.poll().ok().flatten()
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        // Every task's connection is closed: the tasks end, and so does
        // `srun` (a cancelled step at once). One that does not within a
        // grace period is cancelled; either way it is reaped here rather
        // than left a zombie.
        if !matches!(self.srun.wait(Some(Duration::from_secs(5))), Ok(Some(_))) {
            let _ = self.srun.terminate();
            let _ = self.srun.wait(Some(Duration::from_secs(30)));
        }
    }
}

/// One task of a step, as the parent knows it.
pub(crate) struct Task {
    pub(crate) step: Arc<Step>,
    pub(crate) hello: Hello,
}

/// A started task and its control channel.
pub(crate) struct Started {
    pub(crate) task: Arc<Task>,
    pub(crate) control: ControlStream,
}

/// Starts one step of `records.len()` tasks with `launcher` and launches
/// each: task k (its `SLURM_PROCID`) gets `records[k]`. Fails, ending the step,
/// if a task does not reach its entry before the start deadline or the
/// step ends first.
pub(crate) fn start(launcher: &Launcher, records: Vec<LaunchRecord>) -> Result<Vec<Started>> {
    let n = records.len();
    let mut secret = [0u8; 32];
    crate::fault::random_bytes(&mut secret)
        .map_err(|e| Error::bootstrap_with("no secret for the launch", e))?;
    let listener = launcher.listen()?;
    let token = format!("{PROTOCOL}:{}:{}", crate::hex(&secret), listener.address());
    let srun = launcher.spawn(n, TOKEN_ENV, &token)?;
    let step = Arc::new(Step {
        srun,
        tasks: n,
        cancelled: AtomicBool::new(false),
    });
    tracing::debug!(srun = step.srun.pid(), tasks = n, "job step started");
    let deadline = deadline_after(Instant::now(), start_timeout());
    let failed = |why: String| {
        let _ = step.cancel();
        let status = match step.srun.wait(Some(Duration::from_secs(5))) {
            Ok(Some(code)) => format!("srun exit code {code}"),
            _ => "srun still running".into(),
        };
        Error::from(LaunchFailure {
            pid: step.srun.pid(),
            status,
            why,
        })
    };
    // Each task's launch record, by its rank in the step (SLURM_PROCID).
    let mut records = records
        .iter()
        .map(|r| postcard::to_stdvec(r).map(Some))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::encode)?;
    let mut started = Vec::with_capacity(n);
    while started.len() < n {
        let stream = match accept_proven(&listener, &step.srun, &secret, deadline) {
            Ok(s) => s,
            Err(AcceptFailure::ChildExited) => {
                return Err(failed(format!(
                    "the job step ended with {} of its {n} tasks connected \
                     (is this executable at the same path on the nodes?)",
                    started.len()
                )))
            }
            Err(AcceptFailure::Timeout) => {
                return Err(failed(format!(
                    "{} of the step's {n} tasks connected before the start deadline \
                     (can the nodes reach this host? see MPROC_ADVERTISE_ADDR)",
                    started.len()
                )))
            }
            Err(AcceptFailure::Io(e)) => return Err(failed(format!("accept failed: {e}"))),
        };
        let (control, hello) = handshake_and_send(
            stream,
            // Proven by `accept_proven`.
            None,
            &mut |hello| {
                let task = hello.map_or(0, |h| h.task) as usize;
                records.get_mut(task).and_then(Option::take).ok_or_else(|| {
                    format!("task {task} of the step: no such task, or launched twice")
                })
            },
            Vec::new(),
            &step.srun,
            deadline,
            true,
        )
        .map_err(&failed)?;
        let hello = hello.unwrap_or_default();
        tracing::debug!(pid = hello.pid, node = %hello.node, job = %hello.job, "task launched");
        started.push(Started {
            task: Arc::new(Task {
                step: step.clone(),
                hello,
            }),
            control,
        });
    }
    Ok(started)
}
