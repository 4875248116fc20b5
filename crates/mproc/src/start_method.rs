//! Start methods (CPython's `set_start_method`, `get_start_method`,
//! `get_context`): how a child process comes to exist.
//!
//! - [`StartMethod::Spawn`], the default on every OS: this binary is
//!   re-executed with the entry token.
//! - [`StartMethod::Forkserver`] (Unix): a single-threaded server, itself
//!   started once by re-exec, forks each child (`crate::forkserver`).
//!
//! The method in force is the one given to [`set_start_method`], else the
//! `MPROC_START_METHOD` environment variable (`spawn` or `forkserver`,
//! read at first use), else `Spawn`. A [`Context`] starts its processes
//! with its own method whatever the global one is.
//!
//! There is no `fork` method: a Rust program is multi-threaded (the
//! runtime, libraries, mproc's own launcher threads), and a fork copies
//! only the calling thread, with every lock another thread held locked
//! forever in the child (the allocator's, stdout's, a `Mutex` in a
//! library), so the child may deadlock at its first allocation.
//! CPython 3.12 warns about the same, and 3.14 dropped `fork` as the
//! default for it.

use crate::remote::Launcher;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use mproc_ipc::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::registry::{Args, ProcessOutput, Target};
use crate::sys::{ChildProcess, ControlStream};
use crate::{JoinHandle, Pool, Process};

/// How a child process is started (CPython's start methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartMethod {
    /// Re-execute this binary (every OS; the default).
    Spawn,
    /// Fork each child from a single-threaded server process started
    /// once by re-exec (Unix only; [`Error::Unsupported`] on Windows).
    Forkserver,
}

impl StartMethod {
    /// CPython's name: `"spawn"` or `"forkserver"`.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            StartMethod::Spawn => 1,
            StartMethod::Forkserver => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<StartMethod> {
        match code {
            1 => Some(StartMethod::Spawn),
            2 => Some(StartMethod::Forkserver),
            _ => None,
        }
    }

    /// `Err(Error::Unsupported)` where this platform cannot start
    /// processes this way.
    fn check(self) -> Result<StartMethod> {
        if self == StartMethod::Forkserver && !crate::forkserver::SUPPORTED {
            return Err(Error::Unsupported(
                "the forkserver start method needs fork (Unix); use StartMethod::Spawn".into(),
            ));
        }
        Ok(self)
    }
}

impl std::fmt::Display for StartMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// 0: not chosen yet.
static METHOD: AtomicU8 = AtomicU8::new(0);
/// A child process was started: the method can no longer change.
static STARTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The method of the [`Context`] (or internal launch) starting a
    /// process on this thread, if any.
    static OVERRIDE: Cell<Option<StartMethod>> = const { Cell::new(None) };
}

/// Sets how this process starts its children, before it starts any
/// (CPython's `set_start_method`): [`Error::ContextAlreadySet`] once a
/// process was started, [`Error::Unsupported`] for `Forkserver` on
/// Windows.
///
/// ```
/// # #[mproc::main]
/// # fn main() -> mproc::Result<()> {
/// mproc::set_start_method(mproc::StartMethod::Spawn)?;
/// assert_eq!(mproc::get_start_method(), mproc::StartMethod::Spawn);
/// # Ok(())
/// # }
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let method = method.check()?;
    if STARTED.load(Ordering::SeqCst) {
        return Err(Error::ContextAlreadySet);
    }
    METHOD.store(method.code(), Ordering::SeqCst);
    Ok(())
}

/// The start method in force (CPython's `get_start_method`): the one
/// set, else `MPROC_START_METHOD` (`spawn` or `forkserver`), else
/// [`StartMethod::Spawn`].
pub fn get_start_method() -> StartMethod {
    if let Some(m) = StartMethod::from_code(METHOD.load(Ordering::SeqCst)) {
        return m;
    }
    let from_env = match std::env::var("MPROC_START_METHOD").as_deref() {
        Ok("forkserver") => StartMethod::Forkserver.check().unwrap_or_else(|e| {
            tracing::warn!("MPROC_START_METHOD=forkserver: {e}");
            StartMethod::Spawn
        }),
        Ok("spawn") | Ok("") | Err(_) => StartMethod::Spawn,
        Ok(other) => {
            tracing::warn!("MPROC_START_METHOD={other:?} is no start method; using spawn");
            StartMethod::Spawn
        }
    };
    // First use decides, as a `set_start_method` would.
    let _ = METHOD.compare_exchange(0, from_env.code(), Ordering::SeqCst, Ordering::SeqCst);
    StartMethod::from_code(METHOD.load(Ordering::SeqCst)).unwrap_or(StartMethod::Spawn)
}

/// A context for one start method (CPython's `get_context(method)`):
/// [`Error::Unsupported`] for `Forkserver` on Windows.
///
/// ```
/// #[mproc::target]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let ctx = mproc::get_context(mproc::StartMethod::Spawn)?;
///     assert_eq!(ctx.spawn(square, (7,))?.join()?, 49);
///     Ok(())
/// }
/// ```
pub fn get_context(method: StartMethod) -> Result<Context> {
    Ok(Context {
        method: method.check()?,
        launcher: Launcher::local(),
    })
}

/// Starts processes with one start method (CPython's context objects),
/// and, beyond CPython, with one [`Launcher`] (where they start).
#[derive(Clone, Debug)]
pub struct Context {
    method: StartMethod,
    launcher: Launcher,
}

impl Context {
    /// This context's start method.
    pub fn get_start_method(&self) -> StartMethod {
        self.method
    }

    /// Builder: the processes, spawns and pools of this context start
    /// through `launcher` (e.g. [`Launcher::srun`]; the default is
    /// [`Launcher::local`]). The start method applies to local launches.
    ///
    /// ```
    /// let ctx = mproc::get_context(mproc::StartMethod::Spawn)?.launcher(mproc::Launcher::local());
    /// assert_eq!(ctx.get_launcher(), &mproc::Launcher::local());
    /// # Ok::<(), mproc::Error>(())
    /// ```
    pub fn launcher(mut self, launcher: Launcher) -> Context {
        self.launcher = launcher;
        self
    }

    /// This context's launcher.
    pub fn get_launcher(&self) -> &Launcher {
        &self.launcher
    }

    /// A [`Process`] that this context's method starts.
    pub fn process<F, A>(&self, target: F, args: A) -> Process
    where
        F: Target<A>,
        A: Args,
        F::Output: ProcessOutput,
    {
        Process::new(target, args)
            .with_start_method(self.method)
            .with_launcher(self.launcher.clone())
    }

    /// [`spawn`](fn@crate::spawn) with this context's method.
    pub fn spawn<F, A>(&self, target: F, args: A) -> Result<JoinHandle<F::Output>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        with_method(Some(self.method), || {
            crate::join_handle::spawn_with(target, args, &self.launcher)
        })
    }

    /// A [`Pool`] of `processes` workers started with this context's
    /// method. (A worker that replaces one later is started with the
    /// method in force then.)
    pub fn pool(&self, processes: usize) -> Result<Pool> {
        with_method(Some(self.method), || {
            Pool::builder()
                .processes(processes)
                .launcher(self.launcher.clone())
                .build()
        })
    }
}

/// Runs `f` with the processes it starts on this thread started by
/// `method` (`None`: the method in force).
pub(crate) fn with_method<R>(method: Option<StartMethod>, f: impl FnOnce() -> R) -> R {
    let Some(method) = method else {
        return f();
    };
    let previous = OVERRIDE.with(|o| o.replace(Some(method)));
    let r = f();
    OVERRIDE.with(|o| o.set(previous));
    r
}

/// The method the launch being prepared on this thread uses.
pub(crate) fn launching_with() -> StartMethod {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(get_start_method)
}

/// In a child: the method it was started with becomes its own.
pub(crate) fn inherit(method: StartMethod) {
    if method.check().is_ok() {
        METHOD.store(method.code(), Ordering::SeqCst);
    }
}

/// A child created with an inherited control channel: by re-exec when
/// the method in force is `Spawn` and the OS layer can
/// (`sys::INHERITS_CHANNEL`), by the forkserver when it is `Forkserver`;
/// `None` otherwise, and the launch goes through [`create_child`] and a
/// named listener.
///
/// A `daemon` child is tied to this process from its first instruction
/// where the OS layer does that at creation (Windows' Job Object).
pub(crate) fn create_child_inheriting(
    token_env: &str,
    token: &dyn Fn(u64) -> String,
    daemon: bool,
) -> std::io::Result<Option<(ChildProcess, ControlStream)>> {
    let method = OVERRIDE.with(|o| o.get()).unwrap_or_else(get_start_method);
    let inherits = match method {
        // Test suite only: the fault `named-channel` keeps a re-exec'd
        // child on the named channel (the path of an OS without inherited
        // channels), so that its checks are tested here too.
        StartMethod::Spawn => {
            crate::sys::INHERITS_CHANNEL && !crate::fault::requested("named-channel")
        }
        StartMethod::Forkserver => true,
    };
    if !inherits {
        return Ok(None);
    }
    STARTED.store(true, Ordering::SeqCst);
    // The first start makes the runtime directory (sweeping those of
    // dead processes), whichever way its child is launched.
    crate::sys::prepare_runtime_dir()?;
    match method {
        StartMethod::Spawn => ChildProcess::spawn_inheriting(token_env, token, daemon).map(Some),
        StartMethod::Forkserver => crate::forkserver::start_child(token).map(Some),
    }
}

/// The one place a child process is created (from `launch::begin`) with
/// a named control channel: by re-exec (the forkserver's children always
/// inherit theirs: [`create_child_inheriting`]).
pub(crate) fn create_child(token_env: &str, token: &str) -> std::io::Result<ChildProcess> {
    STARTED.store(true, Ordering::SeqCst);
    ChildProcess::spawn(token_env, token)
}
