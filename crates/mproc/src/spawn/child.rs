//! The child's side of a spawn.
//!
//! A life-before-main constructor looks for the entry token in the
//! environment. When it is there, this process is a child: it takes the
//! control channel it inherited (`mproc2:<descriptor>`: only this child
//! holds it, so no secret is needed), or connects to its parent's named
//! control channel and proves the one-time secret, checking the parent
//! does too (`mproc1:<secret>:<address>`: remote launchers, and the
//! test fault `named-channel`); it receives its launch record and handles, runs its
//! target and exits — the program's `main` never runs in a child, whatever
//! it looks like (`#[mproc::main]`, `init()`, libtest's or nextest's
//! harness, or nothing at all).
//!
//! The child finds its target by the offset of its monomorphised entry fn
//! from the anchor (`entry.rs`), which the parent sends (both processes run the same
//! executable, checked with the build mark), and runs it only if it is the
//! entry of a registered target: the registry is filled by early
//! constructors, which the platform runs before this one (see
//! `registry.rs` and docs/architecture.md).
//!
//! A process the kernel started in secure mode (set-user-ID, set-group-ID,
//! file capabilities: `AT_SECURE`) ignores the entry token: its
//! environment is the invoking user's, not its parent's.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

use mproc_ipc::__private::sys as ipc_sys;
use mproc_ipc::__private::{auth, frame, handles};

use super::entry::{build_mark, ChildOutcome, EntryInput};
use super::exit;
use super::record::{
    Ack, Hello, LaunchRecord, Report, BOOTSTRAP_EXIT_CODE, INHERITED, PROTOCOL, TOKEN_ENV,
};
use crate::context::{self, ParentLink};
use crate::registry::{conjure, Args, ProcessOutput, Target};
use crate::sys;

#[ctor::ctor]
fn mproc_boot() {
    boot();
}

/// If this process was started as a child, becomes that child (and never
/// returns); otherwise does nothing.
pub(crate) fn boot() {
    let Some(token) = std::env::var_os(TOKEN_ENV) else {
        return;
    };
    // Test suite only (the fault `outside-job`): a child that runs its
    // first code of ours outside a Job Object dies (exit code 7), before
    // anything else, so that a daemonic child, created in its parent's
    // job, is seen to be there from its start (Windows).
    if crate::fault::requested("outside-job") && ipc_sys::in_a_job_object() == Some(false) {
        std::process::exit(7);
    }
    if sys::secure_exec() {
        // glibc's `secure_getenv` rule: a privileged process does not act
        // on what the invoking user put in its environment. It runs as the
        // program it is (and its children get no stale token).
        sys::scrub_env(TOKEN_ENV);
        let _ = writeln!(
            std::io::stderr(),
            "mproc: {TOKEN_ENV} ignored in a privileged (set-user-ID or capability) process"
        );
        return;
    }
    // Grandchildren must not inherit the token, and other processes must
    // not read it (in /proc/<pid>/environ). The constructor runs before
    // any other thread exists.
    sys::scrub_env(TOKEN_ENV);
    let token = token.to_string_lossy().into_owned();
    become_child(&token);
}

/// Becomes the child the entry token names, and exits: the re-exec'd
/// child's path, and the forkserver's forked child's.
pub(crate) fn become_child(token: &str) -> ! {
    sys::prepare_child();
    let code = match run_child(token) {
        Ok(code) => code,
        Err(reason) => {
            let _ = writeln!(
                std::io::stderr(),
                "mproc: child process {} cannot start: {reason}",
                std::process::id()
            );
            BOOTSTRAP_EXIT_CODE
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

/// What the entry token says.
enum Token<'a> {
    /// `mproc2:<value>`: the channel is the inherited descriptor (handle).
    Inherited(u64),
    /// `mproc1:<secret>:<address>`: connect there and prove the secret.
    Named { secret: Vec<u8>, address: &'a str },
}

fn parse_token(token: &str) -> Result<Token<'_>, String> {
    if let Some(value) = token
        .strip_prefix(INHERITED)
        .and_then(|t| t.strip_prefix(':'))
    {
        let value = value
            .parse::<u64>()
            .map_err(|_| format!("malformed descriptor in {TOKEN_ENV}"))?;
        return Ok(Token::Inherited(value));
    }
    let mut parts = token.splitn(3, ':');
    let (Some(proto), Some(secret), Some(address)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed entry token in {TOKEN_ENV}"));
    };
    if proto != PROTOCOL {
        return Err(format!(
            "entry token of protocol {proto:?}, this binary speaks {PROTOCOL:?} and {INHERITED:?}"
        ));
    }
    let secret = crate::unhex(secret).ok_or_else(|| format!("malformed secret in {TOKEN_ENV}"))?;
    Ok(Token::Named { secret, address })
}

/// Fault injection for the test suite (`crate::fault`): the fault
/// `<stage>` makes a child die (exit code 7), `hang-<stage>` makes it hang
/// at that stage of its bootstrap, the way a child killed mid-launch would.
/// The stages: `before-channel` (before it touches its control channel),
/// `in-handshake` (connected to a named channel, before the challenge),
/// `before-record` (before it reads its launch record).
/// Prefixed `forked-`, a fault applies to a forkserver's forked child
/// alone. Compiled out of every build but the test suite's.
fn fault_point(stage: &str) {
    match crate::fault::at_stage(stage) {
        None => {}
        Some(crate::fault::AtStage::Die) => std::process::exit(7),
        Some(crate::fault::AtStage::Hang) => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

/// Fault injection for the test suite (`crate::fault`), the fault
/// `stranger-holds-channel`: before this child takes its inherited
/// channel, it starts this program again with std's `Command` (which
/// inherits the channel, still inheritable here), hung before it touches
/// it, and dies (exit code 7). The parent's channel then has a stranger
/// holding this child's end, as a `Command` spawned by another thread of
/// the parent during the launch would on Windows: the launch must fail
/// at the child's death all the same, with no end of file to see it by.
fn stranger_holds_channel(value: u64) -> ! {
    if let Ok(exe) = std::env::current_exe() {
        let _ = std::process::Command::new(exe)
            .env(TOKEN_ENV, format!("{INHERITED}:{value}"))
            .env("MPROC_TEST_FAULT", "hang-before-channel")
            .stdin(std::process::Stdio::null())
            .spawn();
    }
    std::process::exit(7);
}

fn run_child(token: &str) -> Result<i32, String> {
    let token = parse_token(token)?;
    fault_point("before-channel");
    let (mut stream, address) = match token {
        Token::Inherited(value) => {
            if crate::fault::requested("stranger-holds-channel") {
                stranger_holds_channel(value);
            }
            let stream = sys::adopt_inherited_channel(value)
                .map_err(|e| format!("cannot take the inherited control channel: {e}"))?;
            sys::set_read_timeout(&stream, Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            (stream, "")
        }
        Token::Named { secret, address } => {
            let mut stream = sys::connect_control(address)
                .map_err(|e| format!("cannot connect to the parent's control channel: {e}"))?;
            sys::set_read_timeout(&stream, Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            fault_point("in-handshake");
            auth::client_handshake(&mut stream, &secret)
                .map_err(|e| format!("control channel handshake failed: {e}"))?;
            (stream, address)
        }
    };
    fault_point("before-record");
    if address.starts_with("tcp:") {
        // Placed by a remote launcher: tell the parent who this is (it
        // cannot see a remote process), and which task of the step, so
        // that it sends this task's launch record.
        let hello = Hello {
            pid: std::process::id(),
            node: std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| sys::host_name()),
            job: std::env::var("SLURM_JOB_ID").unwrap_or_default(),
            task: std::env::var("SLURM_PROCID")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        };
        let bytes = postcard::to_stdvec(&hello).map_err(|e| e.to_string())?;
        frame::write_frame(&mut stream, &bytes)
            .map_err(|e| format!("cannot tell the parent who this is: {e}"))?;
    }
    let record = frame::read_frame(&mut stream, frame::DEFAULT_MAX_MESSAGE)
        .map_err(|e| format!("cannot read the launch record: {e}"))?;
    let record: LaunchRecord =
        postcard::from_bytes(&record).map_err(|e| format!("malformed launch record: {e}"))?;
    if record.build_mark != build_mark() {
        return Err("the executable is not the parent's (was it rebuilt meanwhile?)".into());
    }
    let mut received = if record.remote {
        // Placed by a remote launcher: no handles cross hosts. The parent
        // sentinel is the control channel, which the parent keeps open
        // and silent: it ends when the parent does. A pool worker's
        // connection is the control channel itself (the worker ends with
        // it), and its sentinel never fires.
        let channel = ipc_sys::duplicate(ipc_sys::borrow(&stream))
            .map_err(|e| format!("cannot use the control channel: {e}"))?;
        if record.control_conn {
            let never = sys::remote_parent_sentinel()
                .map_err(|e| format!("cannot make the parent sentinel: {e}"))?;
            vec![never, channel]
        } else {
            vec![channel]
        }
    } else {
        ipc_sys::recv_handles(ipc_sys::borrow(&stream), record.handles as usize)
            .map_err(|e| format!("cannot receive handles: {e}"))?
    };
    sys::set_read_timeout(&stream, None).map_err(|e| e.to_string())?;
    if received.is_empty() {
        return Err("the launch carried no parent sentinel".into());
    }
    let parent = received.remove(0);
    context::set_child(
        record.name.clone(),
        record.identity.clone(),
        record.daemon,
        record.authkey.clone(),
        ParentLink {
            pid: record.parent_pid,
            name: record.parent_name.clone(),
            sentinel: sys::ParentSentinel::from_handle(parent, record.parent_pid),
        },
    );
    // Before the first span or event: the parent's `log_to_stderr`.
    crate::logging::apply_logging(&record.setup);
    let _span =
        tracing::debug_span!("process", name = %record.name, pid = std::process::id()).entered();
    if record.daemon {
        start_watchdog();
    }
    install_panic_recorder();
    // A target that calls `std::process::exit` still joins its own
    // children (CPython's `sys.exit` in a child runs `_exit_function`).
    exit::install_exit_hook();

    let Some(entry) = crate::registry::entry_at(record.entry) else {
        return Err(format!(
            "the launch record names no registered target entry (offset {:#x}, target {:?})",
            record.entry, record.target
        ));
    };
    // The child initializer, before the arguments are decoded: one that
    // fails is this child's failure to start.
    let init_error = crate::logging::run_initializer(&record.setup).err();
    let mut ack_error = None;
    let outcome = {
        let stream_ref = &mut stream;
        let mut ack = |a: Ack| {
            if let Err(msg) = &a {
                ack_error = Some(msg.clone());
            }
            if let Ok(bytes) = postcard::to_stdvec(&a) {
                let _ = frame::write_frame(stream_ref, &bytes);
            }
            // The parent's go-ahead, sent once it has closed its copies of
            // the handles just received: the target never runs (and ends)
            // while the parent still holds a pipe end that is now ours. An
            // end of file (the parent is gone) goes ahead too.
            let _ = frame::read_frame(stream_ref, 16);
        };
        match init_error {
            Some(why) => {
                ack(Err(why));
                ChildOutcome {
                    exitcode: BOOTSTRAP_EXIT_CODE,
                    report: None,
                }
            }
            None => entry(EntryInput {
                args: record.args,
                handles: received,
                ack: &mut ack,
            }),
        }
    };
    let Some(report) = outcome.report else {
        return Err(ack_error.unwrap_or_else(|| "the arguments did not decode".into()));
    };
    if let Report::Failed(msg) = &report {
        let _ = writeln!(std::io::stderr(), "Process {}: {msg}", record.name);
    }
    if record.report {
        if let Ok(bytes) = postcard::to_stdvec(&report) {
            let _ = frame::write_frame(&mut stream, &bytes);
        }
    }
    drop(stream);
    exit::exit_procedure();
    Ok(outcome.exitcode)
}

/// A daemonic child ends as soon as its parent is gone, whatever way the
/// parent died (beyond CPython, which only terminates daemons at a normal
/// parent exit).
fn start_watchdog() {
    let Some(parent) = context::current().parent.clone() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("mproc-watchdog".into())
        .spawn(move || {
            if let Ok(true) = parent.sentinel.wait(None) {
                tracing::debug!("parent gone: daemonic child exits");
                sys::exit_now(1);
            }
        });
}

static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Records the message and location of a panic (for `spawn`'s `join`)
/// and prints it naming the process, as CPython prints `Process p1:`
/// before a child's traceback: `Process p1 (pid N) panicked at
/// file:line:column:` and the message (a backtrace as Rust prints it,
/// under `RUST_BACKTRACE`).
fn install_panic_recorder() {
    let name = context::current().name.clone();
    let pid = std::process::id();
    panic::set_hook(Box::new(move |info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .map(|n| format!(", thread '{n}'"))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        let tail = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("stack backtrace:\n{backtrace}"),
            _ => "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
                .to_string(),
        };
        // One write: stderr is unbuffered, and several processes (a pool's
        // workers) may be printing at once.
        let text = format!(
            "Process {name} (pid {pid}{thread}) panicked at {location}:\n{message}\n{tail}\n"
        );
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some((message, location));
        }
    }));
}

/// The message and `file:line:column` of the panic just caught (recorded
/// by the panic hook; the payload alone when the hook did not run).
pub(crate) fn panic_details(payload: &(dyn std::any::Any + Send)) -> (String, String) {
    LAST_PANIC
        .lock()
        .ok()
        .and_then(|mut l| l.take())
        .unwrap_or_else(|| {
            let m = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".into());
            (m, String::new())
        })
}

fn run_entry<F, A>(
    input: EntryInput<'_>,
    finish: impl FnOnce(F::Output) -> (i32, Report),
) -> ChildOutcome
where
    F: Target<A>,
    A: Args,
{
    let EntryInput { args, handles, ack } = input;
    let Some(f) = conjure::<F>() else {
        ack(Err("the target is not a registered fn".into()));
        return ChildOutcome {
            exitcode: BOOTSTRAP_EXIT_CODE,
            report: None,
        };
    };
    let decoded: Result<A, _> = handles::with_incoming(handles, || postcard::from_bytes(&args));
    let args = match decoded {
        Ok(a) => a,
        Err(e) => {
            ack(Err(format!(
                "cannot decode the target's arguments as {}: {e}",
                std::any::type_name::<A>()
            )));
            return ChildOutcome {
                exitcode: BOOTSTRAP_EXIT_CODE,
                report: None,
            };
        }
    };
    ack(Ok(()));
    match panic::catch_unwind(AssertUnwindSafe(|| f.call(args))) {
        Ok(out) => {
            let (exitcode, report) = finish(out);
            ChildOutcome {
                exitcode,
                report: Some(report),
            }
        }
        Err(payload) => {
            let (message, location) = panic_details(payload.as_ref());
            ChildOutcome {
                exitcode: 1,
                report: Some(Report::Panic { message, location }),
            }
        }
    }
}

/// Entry of a `Process` target: `()` or `Result<(), E: Display>`.
pub(crate) fn process_entry<F, A>(input: EntryInput<'_>) -> ChildOutcome
where
    F: Target<A>,
    A: Args,
    F::Output: ProcessOutput,
{
    run_entry::<F, A>(input, |out| match out.into_outcome() {
        Ok(()) => (0, Report::Value(Vec::new())),
        Err(msg) => (1, Report::Failed(msg)),
    })
}

/// Entry of a `spawn` target: any serialisable return value.
pub(crate) fn spawn_entry<F, A>(input: EntryInput<'_>) -> ChildOutcome
where
    F: Target<A>,
    A: Args,
    F::Output: serde::Serialize,
{
    run_entry::<F, A>(input, |out| match postcard::to_stdvec(&out) {
        Ok(bytes) => (0, Report::Value(bytes)),
        Err(e) => (
            1,
            Report::Failed(format!("cannot encode the target's result: {e}")),
        ),
    })
}
