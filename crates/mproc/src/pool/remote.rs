//! Pool workers placed by a remote launcher (Slurm): the whole pool is
//! one job step of n tasks ([`crate::spawn::step`]), a replacement worker a step
//! of one task (in the same allocation when the pool runs inside one);
//! each worker's connection is its control channel (TCP).
//!
//! [`WorkerProcess`] is what the pool holds of a worker, local or remote.

use std::sync::Arc;

use mproc_ipc::__private::handles;
use mproc_ipc::{pipe, Error, Result};

use super::{worker, Shared, Worker};
use crate::context;
use crate::spawn::entry::{build_mark, offset_of};
use crate::spawn::exit;
use crate::spawn::record::LaunchRecord;
use crate::spawn::started::ChildState;
use crate::spawn::step::{self, Task};

/// A pool worker's process: a local child, or a task of a job step.
#[derive(Clone)]
pub(super) enum WorkerProcess {
    Local(Arc<ChildState>),
    Task(Arc<Task>),
}

impl WorkerProcess {
    /// The worker's pid (on its node, for a task).
    pub(super) fn pid(&self) -> u32 {
        match self {
            WorkerProcess::Local(s) => s.process.pid(),
            WorkerProcess::Task(t) => t.hello.pid,
        }
    }

    /// Kills the worker. A task cannot be signalled alone: its step is
    /// cancelled (every task of it; the pool kills one worker only when
    /// it breaks the protocol, and all of them at `terminate()`).
    pub(super) fn kill(&self) -> std::io::Result<()> {
        match self {
            WorkerProcess::Local(s) => s.process.kill(),
            WorkerProcess::Task(t) => t.step.cancel(),
        }
    }

    /// Waits for the worker to end (its connection has): its exit code,
    /// or -1 for a task whose step goes on (its code is not known).
    pub(super) fn wait(&self) -> std::io::Result<Option<i32>> {
        match self {
            WorkerProcess::Local(s) => s.process.wait(None),
            WorkerProcess::Task(t) => Ok(Some(t.step.exitcode().unwrap_or(-1))),
        }
    }

    /// Marks the worker as stopped by the pool (before it is killed).
    pub(super) fn stopping(&self) {
        if let WorkerProcess::Local(s) = self {
            s.stopping();
        }
    }

    /// Whether its launch succeeded (a task's did, or it would not be).
    pub(super) fn launched(&self) -> Result<()> {
        match self {
            WorkerProcess::Local(s) => s.launched(),
            WorkerProcess::Task(_) => Ok(()),
        }
    }

    /// Leaves the exit procedure's table of children.
    pub(super) fn forget(&self) {
        if let WorkerProcess::Local(s) = self {
            exit::forget(s);
        }
    }
}

/// Starts `n` workers as one job step of `n` tasks.
pub(super) fn start_workers(shared: &Shared, n: usize) -> Result<Vec<Worker>> {
    let me = context::current();
    if me.daemon {
        return Err(Error::DaemonicChildren);
    }
    if let Some(reason) = &me.key_error {
        return Err(Error::bootstrap(reason.clone()));
    }
    // The worker's end of a pipe stands for its connection in the
    // arguments: a remote worker decodes its control channel there.
    let (_mine, theirs) = pipe(true)?;
    let args = worker::WorkerArgs {
        conn: theirs,
        init: shared.init.clone(),
        maxtasks: shared.maxtasks,
    };
    let (encoded, _) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(&args));
    let encoded = encoded?;
    let records = (0..n)
        .map(|_| {
            let (identity, _) = me.next_child();
            LaunchRecord {
                build_mark: build_mark(),
                entry: offset_of(worker::worker_entry),
                target: "mproc::Pool worker".into(),
                args: encoded.clone(),
                handles: 2,
                name: super::worker_name(&identity),
                identity,
                daemon: true,
                authkey: me.authkey.to_vec(),
                parent_pid: std::process::id(),
                parent_name: me.name.clone(),
                report: false,
                remote: true,
                control_conn: true,
                setup: crate::logging::child_setup(),
            }
        })
        .collect();
    step::start(&shared.launcher, records)?
        .into_iter()
        .map(|s| {
            Ok(Worker {
                conn: super::remote_connection(s.control, &args.conn)?,
                state: WorkerProcess::Task(s.task),
            })
        })
        .collect()
}
