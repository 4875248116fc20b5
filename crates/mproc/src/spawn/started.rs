//! A started child as its parent holds it: [`ChildState`], shared by its
//! `Process` (or `JoinHandle`, or pool worker), the children table
//! (`exit.rs`) and any `ProcessInfo` snapshot; with the outcome of its
//! launch, which a launcher thread (`parent.rs`) delivers.

use mproc_ipc::__private::lock::lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use mproc_ipc::{Error, Result};

use super::failure::LaunchFailure;
use crate::sys::{ChildProcess, ControlStream};

/// What the second half of a launch gives: the control channel (for
/// `spawn`, a remote child), or why the child failed to start.
pub(crate) type LaunchOutcome = std::result::Result<Option<ControlStream>, LaunchFailure>;

/// A started child, shared by its `Process`, the children table and any
/// `ProcessInfo` snapshots.
pub(crate) struct ChildState {
    pub(crate) process: ChildProcess,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) authkey: Arc<[u8]>,
    /// The second half of the launch, on its launcher thread, then its
    /// outcome.
    launch: Mutex<Launch>,
    /// `terminate`/`kill` was called: a launch cut short by it is no
    /// failure (CPython: terminated right after start, exitcode -15).
    stopped: AtomicBool,
}

enum Launch {
    Running(Receiver<LaunchOutcome>),
    Done {
        /// Why the child failed to start.
        failure: Option<LaunchFailure>,
        control: Option<ControlStream>,
    },
}

impl ChildState {
    /// A child whose launch a launcher thread is finishing: `outcome`
    /// delivers how it ended.
    pub(crate) fn new(
        process: ChildProcess,
        name: &str,
        daemon: bool,
        authkey: &Arc<[u8]>,
        outcome: Receiver<LaunchOutcome>,
    ) -> ChildState {
        ChildState {
            process,
            name: name.to_string(),
            daemon,
            authkey: authkey.clone(),
            launch: Mutex::new(Launch::Running(outcome)),
            stopped: AtomicBool::new(false),
        }
    }

    /// Waits for the launch to end; `Err` (`ChildFailed`) if the child
    /// failed to start, every time it is asked.
    pub(crate) fn launched(&self) -> Result<()> {
        let mut launch = lock(&self.launch);
        if let Launch::Running(outcome) = &*launch {
            let outcome = outcome.recv().unwrap_or_else(|_| {
                Err(LaunchFailure {
                    pid: self.process.pid(),
                    status: String::new(),
                    why: Error::bootstrap("the launcher thread panicked").to_string(),
                })
            });
            *launch = match outcome {
                Ok(control) => Launch::Done {
                    failure: None,
                    control,
                },
                // Cut short by this process's own terminate or kill.
                Err(_) if self.stopped.load(Ordering::Acquire) => Launch::Done {
                    failure: None,
                    control: None,
                },
                Err(failure) => Launch::Done {
                    failure: Some(failure),
                    control: None,
                },
            };
        }
        match &*launch {
            Launch::Done {
                failure: Some(failure),
                ..
            } => Err(failure.to_error()),
            _ => Ok(()),
        }
    }

    /// The control channel of a `spawn`ed child, once launched.
    pub(crate) fn take_control(&self) -> Result<Option<ControlStream>> {
        self.launched()?;
        let mut launch = lock(&self.launch);
        Ok(match &mut *launch {
            Launch::Done { control, .. } => control.take(),
            Launch::Running(_) => None,
        })
    }

    /// Marks the child as stopped by this process (before signalling it).
    pub(crate) fn stopping(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}
