//! Logging across processes and the child initializer.
//!
//! A child's `main` never runs, so a `tracing` subscriber set up there
//! does not exist in children. [`log_to_stderr`] records its level in
//! this process; every launch record carries it ([`ChildSetup`]), and a
//! child installs the same subscriber before anything else (before
//! mproc's own per-process span, before the child initializer, before its
//! target), as CPython's spawn passes `log_to_stderr` and `log_level` in
//! its preparation data. [`set_child_initializer`] does the same for a
//! registered fn the child runs before its target.
//!
//! Both travel to grandchildren too: a child's own children are started
//! with the setup the child received.

use mproc_ipc::__private::lock::lock;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use mproc_ipc::__private::handles;
use mproc_ipc::{Error, Result};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::registry::{Args, ProcessOutput, Target};

/// What a child sets up before its target, sent in its launch record.
#[derive(Serialize, Deserialize, Clone, Default)]
pub(crate) struct ChildSetup {
    /// The [`log_to_stderr`] level (`None`: not switched on).
    pub(crate) log_level: Option<u8>,
    /// The child initializer: its runner's offset (an `init_entry`,
    /// accepted only through `registry::task_at`) and encoded arguments.
    pub(crate) initializer: Option<(i64, Vec<u8>)>,
    /// The start method the child was started with, which becomes its own
    /// (CPython's preparation data carries `start_method` too).
    pub(crate) start_method: Option<u8>,
}

/// 0: off; else `level_code`.
static LEVEL: AtomicU8 = AtomicU8::new(0);
static INITIALIZER: Mutex<Option<(i64, Vec<u8>)>> = Mutex::new(None);

fn level_code(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn level_of(code: u8) -> Option<Level> {
    Some(match code {
        1 => Level::ERROR,
        2 => Level::WARN,
        3 => Level::INFO,
        4 => Level::DEBUG,
        5 => Level::TRACE,
        _ => return None,
    })
}

/// CPython's level names (`WARNING`, not `WARN`).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Makes this process, and every child started after this call, log to
/// stderr through `tracing`, one line per event in CPython's format
/// `[%(levelname)s/%(processName)s] %(message)s`: `[INFO/Process-1] x`
/// (with the event's other fields after the message, as `key=value`).
/// Events less severe than `level` are left out. (CPython's
/// `multiprocessing.log_to_stderr(level)`.)
///
/// The subscriber is installed as the global default. If this program
/// already installed one, that one stays in charge of this process's
/// events (a global default cannot be replaced) and a debug event says
/// so; children, whose `main` never runs, still install mproc's. Calling
/// it again changes the level (for this process and later children).
///
/// ```
/// #[mproc::target]
/// fn work(n: u32) {
///     tracing::info!("working on {n}");
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     mproc::log_to_stderr(tracing::Level::INFO);
///     // The child prints `[INFO/Process-1] working on 7` on stderr.
///     mproc::spawn(work, (7,))?.join()?;
///     Ok(())
/// }
/// ```
pub fn log_to_stderr(level: Level) {
    let first = LEVEL.swap(level_code(level), Ordering::SeqCst) == 0;
    if first {
        install();
    }
}

/// Installs the stderr subscriber (the level is read from [`LEVEL`] at
/// each event, so that a later `log_to_stderr` changes it).
fn install() {
    let subscriber = tracing_subscriber::registry().with(StderrLayer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        tracing::debug!("log_to_stderr: a global subscriber is already installed; it stays");
    }
}

/// Registers `f(args)` to run in every child started after this call,
/// before its target: in a [`Process`](crate::Process), a
/// [`spawn`](fn@crate::spawn)ed child and each [`Pool`](crate::Pool) worker
/// (before the pool's own initializer), and in their children in turn.
/// This is where a child sets up what a Python module would set up at
/// import time under spawn (a `tracing` subscriber of its own, say),
/// since the program's `main` never runs in a child.
///
/// `f` is a `#[mproc::target]` fn returning `()` or `Result<(), E:
/// Display>`. When it panics or returns `Err`, the child does not start:
/// it exits with [`BOOTSTRAP_EXIT_CODE`](crate::BOOTSTRAP_EXIT_CODE) and
/// `join` reports [`Error::ChildFailed`] with the reason. A second call
/// replaces the initializer.
///
/// Errors: `f` not registered ([`Error::UnregisteredTarget`]), arguments
/// that cannot be encoded or that carry connections or queues
/// ([`Error::Encode`]: an initializer runs in every child, a handle can
/// be given to one).
///
/// ```
/// #[mproc::target]
/// fn setup(tag: String) {
///     std::env::set_var("TAG", tag);
/// }
///
/// #[mproc::target]
/// fn work() -> String {
///     std::env::var("TAG").unwrap_or_default()
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     mproc::set_child_initializer(setup, ("blue".to_string(),))?;
///     assert_eq!(mproc::spawn(work, ())?.join()?, "blue");
///     Ok(())
/// }
/// ```
pub fn set_child_initializer<F, A>(f: F, args: A) -> Result<()>
where
    F: Target<A>,
    A: Args,
    F::Output: ProcessOutput,
{
    let _ = f;
    crate::spawn::prepare::check_registered::<F>()?;
    let (encoded, carried) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(&args));
    if !carried.is_empty() {
        return Err(Error::encode_msg(
            "a child initializer's arguments cannot carry connections or queues",
        ));
    }
    let encoded = encoded?;
    let offset = crate::spawn::entry::task_offset(crate::pool_worker::init_entry::<F, A>);
    *lock(&INITIALIZER) = Some((offset, encoded));
    Ok(())
}

thread_local! {
    static WITHOUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the launches it makes on this thread carrying no setup
/// (the forkserver's own launch: it runs no user code).
pub(crate) fn without_setup<R>(f: impl FnOnce() -> R) -> R {
    let previous = WITHOUT.with(|w| w.replace(true));
    let r = f();
    WITHOUT.with(|w| w.set(previous));
    r
}

/// The setup the next child gets (for its launch record).
pub(crate) fn child_setup() -> ChildSetup {
    if WITHOUT.with(|w| w.get()) {
        return ChildSetup::default();
    }
    let level = LEVEL.load(Ordering::SeqCst);
    ChildSetup {
        start_method: Some(crate::start_method::launching_with().code()),
        log_level: (level != 0).then_some(level),
        initializer: lock(&INITIALIZER).clone(),
    }
}

/// In a child, before its target: switches logging on as the parent
/// asked (and records the setup, and the start method, for the child's
/// own children).
pub(crate) fn apply_logging(setup: &ChildSetup) {
    if let Some(method) = setup.start_method.and_then(crate::StartMethod::from_code) {
        crate::start_method::inherit(method);
    }
    if let Some(level) = setup.log_level.and_then(level_of) {
        log_to_stderr(level);
    }
    if let Some(init) = &setup.initializer {
        *lock(&INITIALIZER) = Some(init.clone());
    }
}

/// In a child, after its identity is set and before its target: runs the
/// child initializer, if any. `Err` is the reason the child cannot start.
pub(crate) fn run_initializer(setup: &ChildSetup) -> std::result::Result<(), String> {
    let Some((offset, args)) = &setup.initializer else {
        return Ok(());
    };
    let Some(init) = crate::registry::task_at(*offset) else {
        return Err("the child initializer names no registered target".into());
    };
    let answer = init(args);
    match answer.split_first() {
        Some((&crate::pool_worker::READY, _)) => Ok(()),
        Some((_, reason)) => Err(String::from_utf8_lossy(reason).replacen(
            "the initializer",
            "the child initializer",
            1,
        )),
        None => Err("the child initializer gave no answer".into()),
    }
}

/// The stderr layer: `[LEVEL/ProcessName] message key=value…`, one write
/// per event (several processes share the terminal).
struct StderrLayer;

impl<S: Subscriber> Layer<S> for StderrLayer {
    fn register_callsite(
        &self,
        _metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // The level may change (a later `log_to_stderr`): ask each time.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        level_of(LEVEL.load(Ordering::Relaxed)).is_some_and(|max| *metadata.level() <= max)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = format!(
            "[{}/{}] {}",
            level_name(*event.metadata().level()),
            crate::context::current().name,
            fields.message
        );
        line.push_str(&fields.rest);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}
