//! The worker's side of a pool: the worker-loop entry, the monomorphised
//! task runners and the wire format between a worker and its pool.
//!
//! Pool → worker, one frame: a batch of tasks, each
//! `[entry offset: i64 LE][payload length: u64 LE][payload]`, where the
//! payload is the postcard encoding of the chunk's `Vec<A>`.
//!
//! Worker → pool, one frame per message: a tag byte, then
//! - [`READY`]: the initializer (if any) ran; tasks follow;
//! - [`INIT_FAILED`]: the initializer failed (UTF-8 reason); the worker ends;
//! - [`DONE`]: a task's [`Answer<R>`], postcard-encoded;
//! - [`FAILED`]: a task that could not run at all (UTF-8 reason).
//!
//! A worker answers its tasks in the order it received them, one frame
//! per task as soon as it ends, so the pool always knows which task a
//! dead worker was running: the oldest one it has not answered.

use std::panic::{self, AssertUnwindSafe};

use mproc_ipc::__private::handles;
use mproc_ipc::Connection;
use serde::{Deserialize, Serialize};

use crate::registry::{self, conjure, Args, ProcessOutput, Target};
use crate::spawn::child::panic_details;
use crate::spawn::entry::{ChildOutcome, EntryInput};
use crate::spawn::record::{Report, BOOTSTRAP_EXIT_CODE};

pub(crate) const READY: u8 = 0;
pub(crate) const INIT_FAILED: u8 = 1;
pub(crate) const DONE: u8 = 2;
pub(crate) const FAILED: u8 = 3;

/// The launch arguments of a pool worker.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    /// The worker's end of its duplex connection to the pool.
    pub(crate) conn: Connection,
    /// The initializer: its runner's offset and its encoded arguments.
    pub(crate) init: Option<(i64, Vec<u8>)>,
    /// `maxtasksperchild`: the worker ends after this many tasks.
    pub(crate) maxtasks: Option<u64>,
}

/// A task's answer: its values when every item returned (the common
/// case, which decodes as fast as a plain `Vec<R>`), else each item's
/// outcome.
#[derive(Serialize, Deserialize)]
pub(crate) enum Answer<R> {
    /// Every item returned: the values, in order.
    All(Vec<R>),
    /// Some item panicked: every item's outcome, in order.
    Mixed(Vec<ItemOutcome<R>>),
}

/// One item's outcome inside a task's answer.
#[derive(Serialize, Deserialize)]
pub(crate) enum ItemOutcome<R> {
    /// What the target returned.
    Value(R),
    /// The target panicked.
    Panic {
        /// The worker's name and pid.
        name: String,
        pid: u32,
        message: String,
        location: String,
    },
}

fn failed(tag: u8, reason: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + reason.len());
    frame.push(tag);
    frame.extend_from_slice(reason.as_bytes());
    frame
}

/// Runs `F` on every item of a chunk, each under `catch_unwind`.
pub(crate) fn task_entry<F, A>(payload: &[u8]) -> Vec<u8>
where
    F: Target<A>,
    A: Args,
    F::Output: Serialize,
{
    let Some(f) = conjure::<F>() else {
        return failed(FAILED, "the target is not a registered fn");
    };
    let items: Vec<A> = match mproc_ipc::decode_from_slice(payload) {
        Ok(items) => items,
        Err(e) => {
            return failed(
                FAILED,
                &format!(
                    "cannot decode the task's arguments as {}: {e}",
                    std::any::type_name::<A>()
                ),
            )
        }
    };
    let mut values: Vec<F::Output> = Vec::with_capacity(items.len());
    let mut mixed: Option<Vec<ItemOutcome<F::Output>>> = None;
    for args in items {
        let outcome = match panic::catch_unwind(AssertUnwindSafe(|| f.call(args))) {
            Ok(value) => ItemOutcome::Value(value),
            Err(payload) => {
                let (message, location) = panic_details(payload.as_ref());
                ItemOutcome::Panic {
                    name: crate::context::current().name.clone(),
                    pid: std::process::id(),
                    message,
                    location,
                }
            }
        };
        match (&mut mixed, outcome) {
            (None, ItemOutcome::Value(v)) => values.push(v),
            (Some(m), outcome) => m.push(outcome),
            (None, panicked) => {
                let mut m: Vec<_> = values.drain(..).map(ItemOutcome::Value).collect();
                m.push(panicked);
                mixed = Some(m);
            }
        }
    }
    let answer = match mixed {
        None => Answer::All(values),
        Some(m) => Answer::Mixed(m),
    };
    match postcard::to_extend(&answer, vec![DONE]) {
        Ok(frame) => frame,
        Err(e) => failed(FAILED, &format!("cannot encode the task's result: {e}")),
    }
}

/// Runs an initializer once (`()` or `Result<(), E: Display>`).
pub(crate) fn init_entry<F, A>(payload: &[u8]) -> Vec<u8>
where
    F: Target<A>,
    A: Args,
    F::Output: ProcessOutput,
{
    let Some(f) = conjure::<F>() else {
        return failed(INIT_FAILED, "the initializer is not a registered fn");
    };
    let args: A = match mproc_ipc::decode_from_slice(payload) {
        Ok(args) => args,
        Err(e) => {
            return failed(
                INIT_FAILED,
                &format!("cannot decode the initializer's arguments: {e}"),
            )
        }
    };
    match panic::catch_unwind(AssertUnwindSafe(|| f.call(args).into_outcome())) {
        Ok(Ok(())) => vec![READY],
        Ok(Err(e)) => failed(
            INIT_FAILED,
            &format!("the initializer returned an error: {e}"),
        ),
        Err(payload) => {
            let (message, location) = panic_details(payload.as_ref());
            failed(
                INIT_FAILED,
                &format!("the initializer panicked at {location}: {message}"),
            )
        }
    }
}

/// The entry of a pool worker process: decodes its [`WorkerArgs`] and runs
/// the worker loop.
pub(crate) fn worker_entry(input: EntryInput<'_>) -> ChildOutcome {
    let EntryInput { args, handles, ack } = input;
    let decoded: Result<WorkerArgs, _> =
        handles::with_incoming(handles, || postcard::from_bytes(&args));
    let worker = match decoded {
        Ok(w) => w,
        Err(e) => {
            ack(Err(format!(
                "cannot decode the pool worker's arguments: {e}"
            )));
            return ChildOutcome {
                exitcode: BOOTSTRAP_EXIT_CODE,
                report: None,
            };
        }
    };
    ack(Ok(()));
    ChildOutcome {
        exitcode: run(worker),
        report: Some(Report::Value(Vec::new())),
    }
}

/// One task of a batch: (runner offset, payload, rest of the batch).
fn split_task(batch: &[u8]) -> Option<(i64, &[u8], &[u8])> {
    let entry = i64::from_le_bytes(batch.get(..8)?.try_into().ok()?);
    let len = u64::from_le_bytes(batch.get(8..16)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    let payload = batch.get(16..16usize.checked_add(len)?)?;
    Some((entry, payload, &batch[16 + len..]))
}

/// Appends one task to a batch frame.
pub(crate) fn push_task(batch: &mut Vec<u8>, entry: i64, payload: &[u8]) {
    batch.extend_from_slice(&entry.to_le_bytes());
    batch.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    batch.extend_from_slice(payload);
}

/// The worker loop: initializer, then tasks until the pool closes the
/// connection (exit code 0) or `maxtasks` were run.
fn run(worker: WorkerArgs) -> i32 {
    let conn = worker.conn;
    let ready = match &worker.init {
        Some((entry, args)) => match registry::task_at(*entry) {
            Some(init) => init(args),
            None => failed(INIT_FAILED, "the initializer is not a registered target"),
        },
        None => vec![READY],
    };
    let init_ok = ready.first() == Some(&READY);
    if conn.send_bytes(&ready).is_err() || !init_ok {
        return i32::from(!init_ok);
    }
    let mut done = 0u64;
    loop {
        let batch = match conn.recv_bytes() {
            Ok(b) => b,
            // The pool closed its end: no more tasks.
            Err(_) => return 0,
        };
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let Some((entry, payload, tail)) = split_task(rest) else {
                tracing::error!("malformed task batch from the pool");
                return 1;
            };
            rest = tail;
            let Some(task) = registry::task_at(entry) else {
                tracing::error!("a task names no registered target: refused");
                return BOOTSTRAP_EXIT_CODE;
            };
            let answer = task(payload);
            if conn.send_bytes(&answer).is_err() {
                return 0;
            }
            done += 1;
            if worker.maxtasks.is_some_and(|k| done >= k) {
                tracing::debug!(tasks = done, "pool worker retires (maxtasksperchild)");
                return 0;
            }
        }
    }
}
