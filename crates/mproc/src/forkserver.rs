//! The forkserver start method: a server process, this same binary
//! started once by re-exec (as a child running the internal entry
//! [`server_entry`]), kept single-threaded, that forks each child on the
//! parent's request. The forked child runs the very bootstrap a re-exec'd
//! child runs (`spawn::child::become_child` with the entry token the parent
//! sent): it takes the control channel the parent made for it (one end of
//! a socket pair, sent to the server with the request and moved into
//! place in the fork; the child checks the parent made it), receives its
//! launch record and handles and runs its target: same handle passing,
//! exit codes, daemon and parent-death rules.
//!
//! The child is the server's child, not the parent's: the server sends
//! the parent a pidfd of the child (opened before the child can be
//! reaped, so it names that very process: the parent's sentinel, `kill`
//! and `terminate`), and the child's exit code over a status pipe the
//! parent gave with the request, once it has reaped it.
//!
//! The server's request channel is a socket pair: the parent's end is
//! the only one (close-on-exec), so nobody else can ask; the server ends
//! at its end of file, that is with the parent, however the parent dies.
//! See docs/architecture.md, "The forkserver".

use mproc_ipc::__private::lock::lock;
use std::sync::Mutex;

use mproc_ipc::__private::sys as ipc_sys;

use crate::spawn::child::become_child;
use crate::spawn::entry::{ChildOutcome, EntryInput};
use crate::spawn::parent::{begin, Identity};
use crate::spawn::prepare::Prepared;
use crate::spawn::record::{Report, BOOTSTRAP_EXIT_CODE};
use crate::start_method::{with_method, StartMethod};
use crate::sys::{self, ChildProcess, ControlStream};

pub(crate) use crate::sys::forkserver::SUPPORTED;

/// The running server: its process and the parent's end of its channel.
struct Server {
    process: ChildProcess,
    channel: sys::forkserver::Channel,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Starts a child through the forkserver (starting the server first, or
/// again if it died), handing it one end of a fresh socket pair, its
/// control channel, through the server; `token(value)` gives its entry
/// token from where the child finds its end. The child and this
/// process's end.
pub(crate) fn start_child(
    token: &dyn Fn(u64) -> String,
) -> std::io::Result<(ChildProcess, ControlStream)> {
    let mut server = lock(&SERVER);
    if server
        .as_ref()
        .is_some_and(|s| !matches!(s.process.poll(), Ok(None)))
    {
        tracing::warn!("the forkserver died: starting a new one");
        *server = None;
    }
    if server.is_none() {
        *server = Some(start_server()?);
    }
    let Some(s) = server.as_mut() else {
        return Err(std::io::Error::other("no forkserver"));
    };
    let (ours, theirs) = sys::forkserver::control_pair()?;
    let theirs = if crate::fault::requested("foreign-channel") {
        // Test suite only: the server gets a socket this process did not
        // make (its stdin, which the test made); the child must refuse it.
        ipc_sys::duplicate(ipc_sys::borrow(&std::io::stdin()))?
    } else {
        theirs
    };
    let token = token(sys::forkserver::CHANNEL_AT);
    match sys::forkserver::request(&mut s.channel, &token, ipc_sys::borrow(&theirs)) {
        Ok(child) => child.map(|child| (child, ours)),
        Err(e) => {
            // A server that does not answer, or answers nonsense, is not
            // used again: the next start starts a new one.
            if let Some(s) = server.take() {
                let _ = s.process.kill();
                let _ = s.process.wait(Some(std::time::Duration::from_secs(2)));
            }
            Err(e)
        }
    }
}

fn start_server() -> std::io::Result<Server> {
    let (channel, server_end) = sys::forkserver::channel()?;
    let me = crate::context::current();
    let prepared = Prepared {
        entry: server_entry,
        target: "mproc::forkserver".into(),
        args: Vec::new(),
        handles: vec![ipc_sys::raw_of(ipc_sys::borrow(&server_end))],
    };
    let local = crate::Launcher::local();
    let who = Identity {
        name: "ForkServer",
        identity: &[],
        daemon: false,
        authkey: &me.authkey,
        report: false,
        launcher: &local,
    };
    // Re-exec'd (never by itself), with no logging or child initializer:
    // the server runs no user code and starts no thread.
    let (process, begun) = crate::logging::without_setup(|| {
        with_method(Some(StartMethod::Spawn), || begin(prepared, &who))
    })
    .map_err(std::io::Error::other)?;
    drop(server_end);
    begun
        .finish(&process)
        .map_err(|failure| std::io::Error::other(failure.to_error()))?;
    tracing::debug!(pid = process.pid(), "forkserver started");
    Ok(Server { process, channel })
}

/// The forkserver's entry (an internal launch entry, see
/// `registry::internal_entries`): takes its request channel and serves
/// until the parent is gone.
pub(crate) fn server_entry(input: EntryInput<'_>) -> ChildOutcome {
    let EntryInput { handles, ack, .. } = input;
    let Some(channel) = handles.into_iter().next() else {
        ack(Err("the forkserver got no request channel".into()));
        return ChildOutcome {
            exitcode: BOOTSTRAP_EXIT_CODE,
            report: None,
        };
    };
    ack(Ok(()));
    ChildOutcome {
        exitcode: sys::forkserver::serve(channel, become_forked_child)
            .unwrap_or(BOOTSTRAP_EXIT_CODE),
        report: Some(Report::Value(Vec::new())),
    }
}

/// A forked child's start: the bootstrap of every child, with the test
/// suite's faults for forked children armed (`crate::fault`).
fn become_forked_child(token: &str) -> ! {
    crate::fault::mark_forked();
    become_child(token)
}
