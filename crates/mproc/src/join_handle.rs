//! `mproc::spawn`: a process that returns a value, shaped like
//! `std::thread::spawn`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use mproc_ipc::__private::frame;
use mproc_ipc::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::registry::{Args, Target};
use crate::spawn::exit;
use crate::spawn::parent::start_child;
use crate::spawn::prepare::prepare;
use crate::spawn::record::Report;
use crate::spawn::started::ChildState;

/// Starts `target(args..)` in a new process at once and returns a handle
/// whose [`join`](JoinHandle::join) gives the target's return value.
///
/// ```
/// #[mproc::target]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let h = mproc::spawn(square, (7,))?;
///     assert_eq!(h.join()?, 49);
///     Ok(())
/// }
/// ```
pub fn spawn<F, A>(target: F, args: A) -> Result<JoinHandle<F::Output>>
where
    F: Target<A>,
    A: Args,
    F::Output: Serialize + DeserializeOwned,
{
    spawn_with(target, args, &crate::remote::Launcher::local())
}

/// [`spawn`] with a launcher (a [`Context`](crate::Context)'s).
pub(crate) fn spawn_with<F, A>(
    target: F,
    args: A,
    launcher: &crate::remote::Launcher,
) -> Result<JoinHandle<F::Output>>
where
    F: Target<A>,
    A: Args,
    F::Output: Serialize + DeserializeOwned,
{
    // The target travels as its type (a zero-sized fn item), not as a value.
    let _ = target;
    let me = crate::context::current();
    let (identity, name) = me.next_child();
    let prepared = if launcher.is_remote() {
        // A queue in the arguments is then served over TCP.
        mproc_ipc::__private::handles::encode_for_remote(&crate::remote::advertised_host(), || {
            prepare::<F, A>(&args, "spawn_entry")
        })
    } else {
        prepare::<F, A>(&args, "spawn_entry")
    }?;
    let state = start_child(
        prepared,
        &name,
        &identity,
        me.daemon,
        &me.authkey,
        true,
        launcher,
    )?;
    drop(args);
    Ok(JoinHandle {
        state,
        _result: PhantomData,
    })
}

/// A process started by [`spawn`]; [`join`](JoinHandle::join) waits for it
/// and returns its target's value. Dropping it detaches the process (the
/// exit procedure still joins it).
pub struct JoinHandle<R> {
    state: Arc<ChildState>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> JoinHandle<R> {
    /// Waits for the process and returns its target's value; a target
    /// returning `Result<T, E>` gives `Ok(Err(e))` when it returned
    /// `Err(e)`. A panic is [`Error::Panicked`] with the process's name and
    /// pid, the message and `file:line:column`; a process that ended
    /// without a result (killed, `std::process::exit`) is
    /// [`Error::NoResult`] with its name, pid and exit code; a
    /// process that failed to start is [`Error::ChildFailed`].
    pub fn join(self) -> Result<R> {
        let control = match self.state.take_control() {
            Ok(control) => control,
            Err(e) => {
                let _ = self.state.process.wait(None);
                exit::forget(&self.state);
                return Err(e);
            }
        };
        let report = {
            let mut control = control;
            match control.as_mut() {
                Some(stream) => match frame::read_frame(stream, frame::DEFAULT_MAX_MESSAGE) {
                    Ok(bytes) => Some(bytes),
                    Err(Error::Eof | Error::EofDuringMessage | Error::BrokenPipe) => None,
                    Err(Error::Io(e)) if crate::sys::channel_ended(&e) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            }
        };
        let exitcode = self.state.process.wait(None)?.unwrap_or(1);
        exit::forget(&self.state);
        let pid = self.state.process.pid();
        let name = self.state.name.clone();
        let Some(bytes) = report else {
            return Err(Error::NoResult {
                name,
                pid,
                exitcode,
            });
        };
        match postcard::from_bytes::<Report>(&bytes) {
            Ok(Report::Value(v)) => mproc_ipc::decode_from_slice(&v).map_err(Error::Decode),
            Ok(Report::Panic { message, location }) => Err(Error::Panicked {
                name,
                pid,
                message,
                location,
            }),
            Ok(Report::Failed(msg)) => Err(Error::TargetError(msg)),
            Err(e) => Err(Error::decode(e)),
        }
    }
}

/// Shows the process as CPython's `repr` of a `Process` does, e.g.
/// `<JoinHandle name='Process-1' pid=1234 started>`.
impl<R> std::fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.state.process.poll() {
            Ok(None) => "started".to_string(),
            Ok(Some(code)) => format!("stopped exitcode={code}"),
            Err(_) => "unknown".to_string(),
        };
        write!(
            f,
            "<JoinHandle name='{}' pid={} {status}>",
            self.state.name,
            self.state.process.pid()
        )
    }
}

impl<R> JoinHandle<R> {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.state.process.pid()
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> Result<bool> {
        Ok(self.state.process.poll()?.is_none())
    }

    /// Waits at most `timeout` for the child to end (`Ok` either way, as
    /// CPython's `join(timeout)`).
    ///
    /// The child's value is read by [`join`](Self::join): a child returning
    /// more than a socket buffer holds (about 200 KB on Linux) waits for
    /// that read before it can end, so `join_timeout` alone sees it
    /// running (as a CPython child that put a large item on a queue is not
    /// joinable before the item is taken).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.state.process.wait(Some(timeout))?;
        Ok(())
    }

    /// Kills the child (SIGKILL / TerminateProcess); a no-op once it ended.
    pub fn kill(&self) -> Result<()> {
        self.state.stopping();
        Ok(self.state.process.kill()?)
    }
}
