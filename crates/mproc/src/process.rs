//! `Process`: CPython's `multiprocessing.Process`, the user-facing handle
//! on a child whose life cycle (launch, bootstrap, exit) is `spawn/`'s.

use std::sync::Arc;
use std::time::Duration;

use mproc_ipc::__private::handles;
use mproc_ipc::{Error, Result, Waitable};

use crate::context;
use crate::registry::{Args, ProcessOutput, Target};
use crate::remote::Launcher;
use crate::spawn::exit;
use crate::spawn::parent::start_child;
use crate::spawn::prepare::{prepare, Prepared};
use crate::spawn::started::ChildState;

/// A target and its arguments, not yet started.
trait Pending: Send {
    fn prepare(&self) -> Result<Prepared>;
    fn run_here(self: Box<Self>) -> Result<()>;
}

struct PendingCall<F, A> {
    target: F,
    args: A,
}

impl<F, A> Pending for PendingCall<F, A>
where
    F: Target<A>,
    A: Args,
    F::Output: ProcessOutput,
{
    fn prepare(&self) -> Result<Prepared> {
        prepare::<F, A>(&self.args, "process_entry")
    }

    fn run_here(self: Box<Self>) -> Result<()> {
        self.target
            .call(self.args)
            .into_outcome()
            .map_err(Error::TargetError)
    }
}

enum State {
    Unstarted(Box<dyn Pending>),
    /// `run()` consumed the target.
    Ran,
    Started(Arc<ChildState>),
    Closed {
        pid: Option<u32>,
        exitcode: Option<i32>,
    },
}

/// A process running a registered target: CPython's
/// `multiprocessing.Process`.
///
/// ```
/// use mproc::Process;
///
/// #[mproc::target]
/// fn say(name: String, task: String) {
///     println!("say PID: {} with name: {name}, task: {task}", std::process::id());
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let mut p = Process::new(say, ("p1".to_string(), "task1".to_string()));
///     p.start()?;
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub struct Process {
    name: String,
    daemon: bool,
    authkey: Arc<[u8]>,
    identity: Vec<u32>,
    launcher: Launcher,
    state: State,
    /// A [`Context`](crate::Context)'s start method (`None`: the one in force).
    method: Option<crate::StartMethod>,
}

impl Process {
    /// A process that will run `target(args..)`. `args` is a tuple checked
    /// against the target's parameters at compile time (`(x,)` for one).
    /// The target must be registered with `#[mproc::target]` (checked at
    /// `start()`), and return `()` or `Result<(), E: Display>`.
    pub fn new<F, A>(target: F, args: A) -> Process
    where
        F: Target<A>,
        A: Args,
        F::Output: ProcessOutput,
    {
        let me = context::current();
        let (identity, name) = me.next_child();
        Process {
            name,
            daemon: me.daemon,
            authkey: me.authkey.clone(),
            identity,
            launcher: Launcher::local(),
            state: State::Unstarted(Box::new(PendingCall { target, args })),
            method: None,
        }
    }

    /// Builder: sets the name (`Process(name=...)`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builder: where the child starts ([`Launcher::local`] by default;
    /// [`Launcher::srun`] has Slurm place it). A remote child's arguments
    /// cannot carry a `Connection` end or other OS handle: `start()`
    /// refuses them.
    pub fn with_launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = launcher;
        self
    }

    /// Builder: sets the daemon flag (`Process(daemon=...)`).
    pub fn with_daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Started with `method` (from [`Context::process`](crate::Context::process)).
    pub(crate) fn with_start_method(mut self, method: crate::StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Renames the process (any time, as CPython; the child sees the name
    /// it had at `start()`).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Sets the daemon flag; an error once started ("process has already started").
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        match self.state {
            State::Unstarted(_) | State::Ran => {
                self.daemon = daemon;
                Ok(())
            }
            _ => Err(Error::AlreadyStarted),
        }
    }

    /// The name (`Process-N` unless set).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon flag.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The authentication key (inherited from the creating process).
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// Starts the child. Hands it the arguments; the parent keeps no copy
    /// of the handles they carry.
    ///
    /// Returns once the child process exists, as CPython's `start()`: the
    /// rest of its launch (the authenticated hand-over of its arguments)
    /// goes on in the background, so children started one after another
    /// start up side by side. A child that then fails to start is
    /// [`Error::ChildFailed`] from [`join`](Self::join). `start()` itself
    /// fails for an unregistered target, arguments that do not encode,
    /// a daemonic caller, or when the OS cannot create the process.
    pub fn start(&mut self) -> Result<()> {
        let pending = match std::mem::replace(&mut self.state, State::Ran) {
            State::Unstarted(p) => p,
            State::Closed { pid, exitcode } => {
                self.state = State::Closed { pid, exitcode };
                return Err(Error::ProcessClosed);
            }
            other => {
                self.state = other;
                return Err(Error::StartedTwice);
            }
        };
        let prepared = if self.launcher.is_remote() {
            // A queue in the arguments is then served over TCP.
            handles::encode_for_remote(&crate::remote::advertised_host(), || pending.prepare())
        } else {
            pending.prepare()
        };
        let started = prepared.and_then(|prepared| {
            crate::start_method::with_method(self.method, || {
                start_child(
                    prepared,
                    &self.name,
                    &self.identity,
                    self.daemon,
                    &self.authkey,
                    false,
                    &self.launcher,
                )
            })
        });
        match started {
            Ok(state) => {
                // Dropping `pending` closes this process's copies of the
                // handles that went to the child.
                drop(pending);
                self.state = State::Started(state);
                Ok(())
            }
            Err(e) => {
                self.state = State::Unstarted(pending);
                Err(e)
            }
        }
    }

    /// Runs the target in the calling process (CPython's `run()`); only on
    /// a process never started, which cannot be started afterwards. A
    /// target's `Err(e)` is [`Error::TargetError`]; a panic propagates.
    pub fn run(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Ran) {
            State::Unstarted(p) => p.run_here(),
            State::Closed { pid, exitcode } => {
                self.state = State::Closed { pid, exitcode };
                Err(Error::ProcessClosed)
            }
            other => {
                self.state = other;
                Err(Error::RunAfterStart)
            }
        }
    }

    fn child(&self) -> Result<&Arc<ChildState>> {
        match &self.state {
            State::Started(c) => Ok(c),
            State::Closed { .. } => Err(Error::ProcessClosed),
            _ => Err(Error::JoinNotStarted),
        }
    }

    /// Waits for the child to end. A child that failed to start (it
    /// died or hung before running its target, or could not decode its
    /// arguments) is [`Error::ChildFailed`] with its pid, exit status and
    /// why; [`exitcode`](Self::exitcode) then tells its code as well.
    pub fn join(&mut self) -> Result<()> {
        let c = self.child()?;
        let launched = c.launched();
        c.process.wait(None)?;
        exit::forget(c);
        launched
    }

    /// Waits at most `timeout` (`Ok` on timeout, as CPython returns None;
    /// `Duration::ZERO` returns at once).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<()> {
        let c = self.child()?;
        if c.process.wait(Some(timeout))?.is_some() {
            exit::forget(c);
        }
        Ok(())
    }

    /// SIGTERM on Unix, TerminateProcess on Windows; exitcode -15. A no-op
    /// once the child has ended.
    pub fn terminate(&mut self) -> Result<()> {
        let c = self.child().map_err(not_started)?;
        c.stopping();
        Ok(c.process.terminate()?)
    }

    /// SIGKILL on Unix, TerminateProcess on Windows; exitcode -9. A no-op
    /// once the child has ended.
    pub fn kill(&mut self) -> Result<()> {
        let c = self.child().map_err(not_started)?;
        c.stopping();
        Ok(c.process.kill()?)
    }

    /// Releases the process's resources; an error while it still runs.
    /// Afterwards the getters keep their last values and the other methods
    /// are "process object is closed".
    pub fn close(&mut self) -> Result<()> {
        match &self.state {
            State::Started(c) => {
                let exitcode = c.process.poll()?;
                if exitcode.is_none() {
                    return Err(Error::CloseRunning);
                }
                exit::forget(c);
                self.state = State::Closed {
                    pid: Some(c.process.pid()),
                    exitcode,
                };
            }
            State::Closed { .. } => {}
            State::Unstarted(_) | State::Ran => {
                self.state = State::Closed {
                    pid: None,
                    exitcode: None,
                }
            }
        }
        Ok(())
    }

    /// Whether the child runs (false before start and after it ended).
    pub fn is_alive(&mut self) -> Result<bool> {
        match &self.state {
            State::Started(c) => Ok(c.process.poll()?.is_none()),
            State::Closed { .. } => Err(Error::ProcessClosed),
            _ => Ok(false),
        }
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Started(c) => Some(c.process.pid()),
            State::Closed { pid, .. } => *pid,
            _ => None,
        }
    }

    /// `None` while running or unstarted; 0; `n` from
    /// `std::process::exit(n)`; 1 on panic or `Err`; -15 after
    /// `terminate`, -9 after `kill` (on Windows too); `-signum` for
    /// another signal on Unix.
    pub fn exitcode(&self) -> Option<i32> {
        match &self.state {
            State::Started(c) => c.process.poll().ok().flatten(),
            State::Closed { exitcode, .. } => *exitcode,
            _ => None,
        }
    }

    /// A handle that becomes ready when the child ends: wait on it with
    /// [`wait`](crate::wait) together with connections.
    pub fn sentinel(&self) -> Result<Sentinel<'_>> {
        match &self.state {
            State::Started(c) => Ok(Sentinel { child: c }),
            State::Closed { .. } => Err(Error::ProcessClosed),
            _ => Err(Error::NotStarted),
        }
    }
}

fn not_started(e: Error) -> Error {
    match e {
        Error::JoinNotStarted => Error::NotStarted,
        e => e,
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match &self.state {
            State::Unstarted(_) | State::Ran => "initial".to_string(),
            State::Started(c) => match c.process.poll() {
                Ok(None) => "started".to_string(),
                Ok(Some(code)) => format!("stopped exitcode={code}"),
                Err(_) => "unknown".to_string(),
            },
            State::Closed { .. } => "closed".to_string(),
        };
        write!(f, "<Process name='{}' {status}", self.name)?;
        if self.daemon {
            f.write_str(" daemon")?;
        }
        f.write_str(">")
    }
}

/// A process's sentinel: ready once the process has ended.
pub struct Sentinel<'a> {
    child: &'a ChildState,
}

impl Sentinel<'_> {
    pub(crate) fn handle(&self) -> mproc_ipc::__private::sys::BorrowedHandle<'_> {
        self.child.process.sentinel()
    }
}

// `AsFd`/`AsRawFd` on Unix, `AsHandle`/`AsRawHandle` on Windows.
mproc_ipc::__private::impl_as_handle!(Sentinel<'_>, |s| s.handle());

impl Waitable for Sentinel<'_> {
    fn wait_source(&self) -> Result<mproc_ipc::__private::sys::BorrowedHandle<'_>> {
        Ok(self.handle())
    }
}

enum InfoKind {
    Current,
    Parent(Arc<context::ParentLink>),
    Child(Arc<ChildState>),
}

/// A snapshot of a process: `current_process()`, `parent_process()`,
/// `active_children()`.
pub struct ProcessInfo {
    name: String,
    pid: Option<u32>,
    daemon: bool,
    authkey: Arc<[u8]>,
    kind: InfoKind,
}

impl ProcessInfo {
    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Its daemon flag.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// Its authkey.
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// Whether it still runs (for the parent: turns false when it dies).
    pub fn is_alive(&mut self) -> Result<bool> {
        match &self.kind {
            InfoKind::Current => Ok(true),
            InfoKind::Parent(p) => Ok(!p.sentinel.wait(Some(Duration::ZERO))?),
            InfoKind::Child(c) => Ok(c.process.poll()?.is_none()),
        }
    }

    /// Waits at most `timeout` for it to end.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<()> {
        match &self.kind {
            InfoKind::Current => Err(Error::bootstrap("a process cannot join itself")),
            InfoKind::Parent(p) => {
                p.sentinel.wait(Some(timeout))?;
                Ok(())
            }
            InfoKind::Child(c) => {
                c.process.wait(Some(timeout))?;
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for ProcessInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessInfo")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("daemon", &self.daemon)
            .finish()
    }
}

/// This process (`MainProcess` in the main process).
pub fn current_process() -> ProcessInfo {
    let me = context::current();
    ProcessInfo {
        name: me.name.clone(),
        pid: Some(std::process::id()),
        daemon: me.daemon,
        authkey: me.authkey.clone(),
        kind: InfoKind::Current,
    }
}

/// The parent of this process; `None` in the main process.
pub fn parent_process() -> Option<ProcessInfo> {
    let me = context::current();
    let parent = me.parent.clone()?;
    Some(ProcessInfo {
        name: parent.name.clone(),
        pid: Some(parent.pid),
        daemon: false,
        authkey: me.authkey.clone(),
        kind: InfoKind::Parent(parent),
    })
}

/// The live children of this process (finished ones are reaped).
pub fn active_children() -> Vec<ProcessInfo> {
    exit::live_children()
        .into_iter()
        .map(|c| ProcessInfo {
            name: c.name.clone(),
            pid: Some(c.process.pid()),
            daemon: c.daemon,
            authkey: c.authkey.clone(),
            kind: InfoKind::Child(c),
        })
        .collect()
}

/// The number of CPUs this process may use.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
