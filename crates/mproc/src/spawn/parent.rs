//! The parent's side of a spawn: entry token, control channel, launch
//! record, handles, and the child's acknowledgement.
//!
//! A local child started by re-exec (the `spawn` start method, where the
//! OS layer can: `sys::INHERITS_CHANNEL`) or forked by the forkserver
//! inherits its control channel:
//!
//! 1. re-execute this binary (or have the server fork) handing it one end
//!    of a socket pair, which no other process inherits; the entry token (`mproc2:<descriptor>`)
//!    only says where the child finds it: no name, no secret;
//! 2. send the launch record and the handles (the child reads them
//!    whenever it gets there: the socket holds them meanwhile);
//! 3. wait for the child's acknowledgement that it decoded its
//!    arguments, racing its exit (end of file) and a deadline.
//!
//! Every other child (a remote launcher's, any child on an OS without
//! inherited channels) connects to a named listener:
//!
//! 1. bind a one-shot control listener in this process's private
//!    directory, and start the child with the entry token (a one-time
//!    secret and the listener's address) in its environment;
//! 2. accept the child's connection, racing its exit and a deadline;
//! 3. mutual HMAC challenge over the secret (CPython's, `mproc_ipc::__private::auth`);
//! 4. send the launch record and the handles its arguments carry;
//! 5. wait for the child's acknowledgement that it decoded its arguments.
//!
//! `start()` ([`start_child`]) does step 1 ([`begin`]), puts the child in
//! the children table (`exit.rs`) and returns; steps 2–5
//! ([`Begun::finish`]) run on a launcher thread (`threads.rs`), whose
//! outcome the child's [`ChildState`] keeps, and `join` (or a `spawn`
//! handle's `join`) reports a launch that failed ([`LaunchFailure`]).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mproc_ipc::__private::sys as ipc_sys;
use mproc_ipc::__private::{auth, frame};
use mproc_ipc::{Error, Result};

use super::entry::{build_mark, offset_of};
use super::exit;
use super::failure::LaunchFailure;
use super::prepare::Prepared;
use super::record::{
    Ack, Hello, LaunchRecord, BOOTSTRAP_EXIT_CODE, INHERITED, PROTOCOL, TOKEN_ENV,
};
use super::scope;
use super::started::{ChildState, LaunchOutcome};
use super::threads;
use crate::context;
use crate::remote::Launcher;
use crate::sys::{self, AcceptFailure, ChildProcess, ControlListener, ControlStream};

/// The go-ahead a child waits for after its acknowledgement.
const GO: u8 = 1;

/// Everything `launch` needs besides the prepared arguments.
pub(crate) struct Identity<'a> {
    pub(crate) name: &'a str,
    pub(crate) identity: &'a [u32],
    pub(crate) daemon: bool,
    pub(crate) authkey: &'a [u8],
    pub(crate) report: bool,
    pub(crate) launcher: &'a Launcher,
}

/// Starts a child (shared by `Process::start` and `spawn`).
pub(crate) fn start_child(
    prepared: Prepared,
    name: &str,
    identity: &[u32],
    daemon: bool,
    authkey: &Arc<[u8]>,
    report: bool,
    launcher: &Launcher,
) -> Result<Arc<ChildState>> {
    let me = context::current();
    if me.daemon {
        return Err(Error::DaemonicChildren);
    }
    if let Some(reason) = &me.key_error {
        return Err(Error::bootstrap(reason.clone()));
    }
    if std::env::var_os(TOKEN_ENV).is_some() {
        // This process was started as a child but never went through
        // mproc's entry: refuse to spawn again (fork-bomb guard), loudly.
        let _ = writeln!(std::io::stderr(), "mproc: {}", Error::ForkBomb);
        let _ = std::io::stderr().flush();
        std::process::exit(BOOTSTRAP_EXIT_CODE);
    }
    // Before the child exists: whatever `main` looks like, the exit
    // procedure joins it (and lets its launch complete).
    exit::install_exit_hook();
    let slot = threads::slot();
    let (process, begun) = begin(
        prepared,
        &Identity {
            name,
            identity,
            daemon,
            authkey,
            report,
            launcher,
        },
    )?;
    let (done, outcome) = std::sync::mpsc::channel();
    // Made before the job runs: `launched()` waits on `outcome`.
    let state = Arc::new(ChildState::new(process, name, daemon, authkey, outcome));
    let launcher = state.clone();
    let job = threads::run(move || {
        let outcome = begun.finish(&launcher.process);
        drop(slot);
        let _ = done.send(outcome);
    });
    match job {
        Ok(()) => {}
        Err(e) => {
            // No thread to spare: the launch is lost with it, and so is
            // the child, which waits in vain for its launch record.
            let _ = state.process.kill();
            let _ = state.process.wait(None);
            return Err(Error::Io(e));
        }
    }
    exit::register(state.clone());
    scope::adopt(&state);
    Ok(state)
}

/// The first half of a launch, done by `start()` itself; the second half,
/// [`Begun::finish`], runs on a launcher thread, so that `start()`
/// returns while the child is still starting up (as CPython's does) and
/// a program starting many children has them start up side by side.
pub(crate) struct Begun {
    channel: Channel,
    deadline: Instant,
    record: Vec<u8>,
    /// The args' handles, duplicated: the caller's copies close when
    /// `start()` returns, these once they are sent.
    handles: Vec<ipc_sys::OwnedHandle>,
    report: bool,
    remote: bool,
}

/// How the child reaches its control channel.
enum Channel {
    /// The child inherited its end: only it holds it. `sent` is the
    /// outcome of sending the launch at once, in `start()` (a small
    /// record), `None` when the launcher thread sends it.
    Inherited {
        stream: ControlStream,
        sent: Option<std::result::Result<(), String>>,
    },
    /// The child connects to this listener and proves the secret.
    Named {
        listener: ControlListener,
        secret: [u8; 32],
    },
}

/// How long a child may take to reach its entry and acknowledge
/// (`MPROC_START_TIMEOUT_SECS`, 60 s by default).
pub(crate) fn start_timeout() -> Duration {
    std::env::var("MPROC_START_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

/// `now + timeout`, saturated: a huge timeout (`u64::MAX` seconds) means
/// "no deadline in this program's lifetime", never an overflow panic.
pub(crate) fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or_else(|| {
        // About 30 years: later than any child takes to start, and far
        // from any platform's `Instant` limit.
        now.checked_add(Duration::from_secs(1 << 30)).unwrap_or(now)
    })
}

/// Starts a child process for `prepared` as `who` describes: the entry
/// token, the control listener, the launch record ready to send. What is
/// left is [`Begun::finish`].
pub(crate) fn begin(prepared: Prepared, who: &Identity<'_>) -> Result<(ChildProcess, Begun)> {
    let remote = who.launcher.is_remote();
    if remote && !prepared.handles.is_empty() {
        return Err(Error::bootstrap(format!(
            "cannot start {:?} with a remote launcher: its arguments carry {} OS handle(s) \
             (a Connection end or a Queue backed by a local socket), which cannot cross hosts",
            who.name,
            prepared.handles.len()
        )));
    }
    let borrowed: Vec<_> = prepared
        .handles
        .iter()
        // SAFETY: the values being launched own these handles and are
        // alive for the duration of this call.
        .map(|raw| unsafe { ipc_sys::borrow_raw(*raw) })
        .collect();
    ipc_sys::check_sendable(&borrowed).map_err(Error::Io)?;
    // Duplicates: the caller's copies close when `start()` returns, these
    // once they are sent.
    let handles = borrowed
        .into_iter()
        .map(ipc_sys::duplicate)
        .collect::<std::io::Result<Vec<_>>>()?;
    let me = context::current();
    let record = LaunchRecord {
        build_mark: build_mark(),
        entry: if crate::fault::requested("unregistered-entry") {
            // Test suite only: a record naming a fn that is no registered
            // target's entry (the anchor itself); the child must refuse it.
            0
        } else {
            offset_of(prepared.entry)
        },
        target: prepared.target,
        args: prepared.args,
        handles: (handles.len() + 1) as u32,
        name: who.name.to_string(),
        identity: who.identity.to_vec(),
        daemon: who.daemon,
        authkey: who.authkey.to_vec(),
        parent_pid: std::process::id(),
        parent_name: me.name.clone(),
        report: who.report,
        remote,
        // Only a job step's pool workers use it (`step.rs`).
        control_conn: false,
        setup: crate::logging::child_setup(),
    };
    let bytes = postcard::to_stdvec(&record).map_err(Error::encode)?;
    let inherited = who.launcher.spawn_inheriting(
        TOKEN_ENV,
        &|value| format!("{INHERITED}:{value}"),
        who.daemon,
    )?;
    let (child, mut channel) = match inherited {
        Some((child, stream)) => (child, Channel::Inherited { stream, sent: None }),
        None => {
            let mut secret = [0u8; 32];
            crate::fault::random_bytes(&mut secret)
                .map_err(|e| Error::bootstrap_with("no secret for the launch", e))?;
            let listener = who.launcher.listen()?;
            tracing::debug!(address = %listener.address(), "control channel listening");
            let token = format!("{PROTOCOL}:{}:{}", crate::hex(&secret), listener.address());
            let child = who.launcher.spawn(1, TOKEN_ENV, &token)?;
            (child, Channel::Named { listener, secret })
        }
    };
    tracing::debug!(pid = child.pid(), name = who.name, target_fn = %record.target, "child started");
    let deadline = deadline_after(Instant::now(), start_timeout());
    let (mut bytes, mut handles) = (bytes, handles);
    if let Channel::Inherited { stream, sent } = &mut channel {
        if bytes.len() <= SEND_AT_ONCE {
            // The child is loading meanwhile: it finds its record waiting
            // and never waits for a launcher thread to be scheduled.
            let record = std::mem::take(&mut bytes);
            *sent = Some(set_deadline(stream, deadline).and_then(|()| {
                send_launch(stream, &record, std::mem::take(&mut handles), &child, false)
            }));
        }
    }
    // A daemonic child with an inherited channel was tied at creation
    // (this is then a no-op); one on a named channel is tied here.
    if who.daemon {
        if let Err(e) = child.tie_to_parent() {
            let _ = child.kill();
            return Err(LaunchFailure::of(
                &child,
                &format!("cannot tie the daemonic child to its parent: {e}"),
            )
            .into());
        }
    }
    Ok((
        child,
        Begun {
            channel,
            deadline,
            record: bytes,
            handles,
            report: who.report,
            remote,
        },
    ))
}

impl Begun {
    /// The second half of a launch: accept the child's connection (racing
    /// its exit and the deadline), the mutual challenge, the launch record
    /// and handles, the child's acknowledgement. Returns the control
    /// channel for `spawn`; any failure is `Error::ChildFailed` with the
    /// child's pid and status (a hung child is killed).
    pub(crate) fn finish(self, child: &ChildProcess) -> LaunchOutcome {
        let span = tracing::debug_span!("launch", pid = child.pid());
        let _enter = span.enter();
        let _deadline_guard = sys::LaunchDeadline::arm(child, self.deadline);
        let keep = self.report || self.remote;
        let (stream, secret) = match self.channel {
            Channel::Inherited { mut stream, sent } => {
                let launched = match sent {
                    // `start()` set the deadline and sent the launch.
                    Some(sent) => sent,
                    None => set_deadline(&stream, self.deadline).and_then(|()| {
                        send_launch(&mut stream, &self.record, self.handles, child, false)
                    }),
                }
                .and_then(|()| read_ack(&mut stream));
                return match launched {
                    // The channel goes on (a `spawn`'s report) without the
                    // launch's deadline; else it is closed here.
                    Ok(Ok(())) if self.report => match lift_deadline(&stream) {
                        Ok(()) => {
                            tracing::debug!("child acknowledged its launch");
                            Ok(Some(stream))
                        }
                        Err(e) => Err(LaunchFailure::of(child, &e)),
                    },
                    Ok(Ok(())) => {
                        tracing::debug!("child acknowledged its launch");
                        Ok(None)
                    }
                    Ok(Err(refused)) => Err(LaunchFailure::of(child, &refused)),
                    Err(reason) => {
                        // Its end closed (the child is gone, whatever
                        // socket call noticed), or the deadline passed.
                        let why = match child.wait(Some(Duration::from_millis(100))) {
                            Ok(Some(_)) => "it ended before acknowledging its launch",
                            _ => "it did not acknowledge its launch",
                        };
                        Err(LaunchFailure::of(child, &format!("{why} ({reason})")))
                    }
                };
            }
            Channel::Named { listener, secret } => {
                let accepted = if self.remote {
                    accept_proven(&listener, child, &secret, self.deadline)
                } else {
                    listener.accept(child, self.deadline)
                };
                match accepted {
                    // A remote child has proven the secret already.
                    Ok(s) => (s, (!self.remote).then_some(secret)),
                    Err(AcceptFailure::ChildExited) => return Err(LaunchFailure::of(
                        child,
                        "it exited before reaching mproc's entry (was the binary built with mproc?)",
                    )),
                    Err(AcceptFailure::Timeout) => {
                        return Err(LaunchFailure::of(
                            child,
                            "it did not reach mproc's entry before the start deadline",
                        ))
                    }
                    Err(AcceptFailure::Io(e)) => {
                        return Err(LaunchFailure::of(child, &format!("accept failed: {e}")))
                    }
                }
            }
        };
        let handles = if self.remote {
            // Nothing crosses hosts: the remote child gets no handles.
            Vec::new()
        } else {
            self.handles
        };
        let mut record = Some(self.record);
        match handshake_and_send(
            stream,
            secret.as_ref().map(|s| &s[..]),
            &mut |_| {
                record
                    .take()
                    .ok_or_else(|| "the launch record was sent".to_string())
            },
            handles,
            child,
            self.deadline,
            self.remote,
        ) {
            Ok((control, _)) => {
                tracing::debug!("child acknowledged its launch");
                // A remote child's control channel stays open: it is its
                // pool connection, or ends only with the child.
                Ok(keep.then_some(control))
            }
            Err(reason) => Err(LaunchFailure::of(child, &reason)),
        }
    }
}

/// Gives the encoded launch record for a child (a remote one's by what
/// its [`Hello`] says).
pub(crate) type PickRecord<'a> =
    dyn FnMut(Option<&Hello>) -> std::result::Result<Vec<u8>, String> + 'a;

/// The launch over a connected control channel: the mutual challenge
/// over `secret` (none for an inherited channel, which only the child
/// holds, nor for a remote child already proven), the launch record and
/// handles, the go-ahead, the child's acknowledgement; all bounded by
/// `deadline`.
pub(crate) fn handshake_and_send(
    mut stream: ControlStream,
    secret: Option<&[u8]>,
    record: &mut PickRecord<'_>,
    handles: Vec<ipc_sys::OwnedHandle>,
    child: &ChildProcess,
    deadline: Instant,
    remote: bool,
) -> std::result::Result<(ControlStream, Option<Hello>), String> {
    set_deadline(&stream, deadline)?;
    if let Some(secret) = secret {
        auth::server_handshake(&mut stream, secret)
            .map_err(|e| format!("control channel handshake failed: {e}"))?;
    }
    // A remote child (already proven: `accept_proven`) first says who it
    // is and which task of its step: its launch record depends on it.
    let hello = if remote {
        let bytes = frame::read_frame(&mut stream, 4096)
            .map_err(|e| format!("no hello from the remote child: {e}"))?;
        Some(postcard::from_bytes::<Hello>(&bytes).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let record = record(hello.as_ref())?;
    send_launch(&mut stream, &record, handles, child, remote)?;
    read_ack(&mut stream)??;
    lift_deadline(&stream)?;
    Ok((stream, hello))
}

/// Launch records up to this size are sent by `start()` itself on an
/// inherited channel: far below any socket buffer, so the write does not
/// wait for the child (a larger one goes from the launcher thread, which
/// may wait for the child to read).
const SEND_AT_ONCE: usize = 32 << 10;

/// Bounds reads and writes on the control channel by `deadline`: a child
/// that hangs is seen at the deadline, and never holds a writer forever.
fn set_deadline(stream: &ControlStream, deadline: Instant) -> std::result::Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let left = Some(left.max(Duration::from_millis(1)));
    sys::set_read_timeout(stream, left).map_err(|e| e.to_string())?;
    sys::set_write_timeout(stream, left).map_err(|e| e.to_string())
}

/// Sends the launch record, then (a local child) the handles, parent
/// sentinel first, closes this process's copies, and sends the go-ahead.
fn send_launch(
    stream: &mut ControlStream,
    record: &[u8],
    handles: Vec<ipc_sys::OwnedHandle>,
    child: &ChildProcess,
    remote: bool,
) -> std::result::Result<(), String> {
    frame::write_frame(stream, record)
        .map_err(|e| format!("cannot send the launch record: {e}"))?;
    let mut all = Vec::with_capacity(handles.len() + 1);
    if !remote {
        let parent_sentinel = sys::parent_sentinel_for_child().map_err(|e| e.to_string())?;
        all.push(parent_sentinel);
        all.extend(handles.iter().map(ipc_sys::borrow));
        ipc_sys::send_handles(ipc_sys::borrow(&*stream), &all, sys::handle_peer(child))
            .map_err(|e| format!("cannot send handles: {e}"))?;
    }
    // This process's copies close before the child may run its target:
    // a pipe end given to the child is the child's alone (the parent sees
    // end of file when the child is done with it, as after CPython's
    // start()). Then the go-ahead the child waits for after its ack.
    drop(all);
    drop(handles);
    frame::write_frame(stream, &[GO]).map_err(|e| format!("cannot send the go-ahead: {e}"))
}

/// Reads the child's acknowledgement: `Ok` with its arguments decoded,
/// or why not (its own words); `Err` when none came (the channel ended
/// or timed out).
fn read_ack(stream: &mut ControlStream) -> std::result::Result<Ack, String> {
    let ack = frame::read_frame(stream, 1 << 20)
        .map_err(|e| format!("no acknowledgement from the child: {e}"))?;
    postcard::from_bytes(&ack).map_err(|e| e.to_string())
}

/// Lifts the launch's deadline from a control channel that stays open
/// after the launch (a `spawn`'s report, a remote child's channel).
fn lift_deadline(stream: &ControlStream) -> std::result::Result<(), String> {
    sys::set_read_timeout(stream, None).map_err(|e| e.to_string())?;
    sys::set_write_timeout(stream, None).map_err(|e| e.to_string())
}

/// How long a connection on a remote launch's TCP listener may take to
/// prove the secret before the next one is accepted.
const REMOTE_HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// For a remote launch (a TCP listener anyone on the network can reach):
/// accepts connections until one proves the secret. A peer that does not
/// is dropped (it learns nothing) and the wait goes on, so a stranger
/// cannot fail the launch by connecting first.
pub(crate) fn accept_proven(
    listener: &ControlListener,
    child: &ChildProcess,
    secret: &[u8],
    deadline: Instant,
) -> std::result::Result<ControlStream, AcceptFailure> {
    loop {
        let mut stream = listener.accept(child, deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = left
            .min(REMOTE_HANDSHAKE_LIMIT)
            .max(Duration::from_millis(1));
        sys::set_read_timeout(&stream, Some(limit)).map_err(AcceptFailure::Io)?;
        match auth::server_handshake(&mut stream, secret) {
            Ok(()) => return Ok(stream),
            Err(e) => {
                tracing::warn!("refused a connection to a remote launch's listener: {e}");
            }
        }
    }
}
