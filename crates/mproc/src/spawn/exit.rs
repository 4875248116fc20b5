//! The table of this process's children and the exit procedure
//! (CPython's `util._exit_function`): at exit, daemonic children are
//! terminated and the others joined.

use mproc_ipc::__private::lock::lock;
use std::sync::{Arc, Mutex, MutexGuard};

use super::failed;
use super::started::ChildState;
use crate::sys;

static CHILDREN: Mutex<Vec<Arc<ChildState>>> = Mutex::new(Vec::new());

fn children() -> MutexGuard<'static, Vec<Arc<ChildState>>> {
    lock(&CHILDREN)
}

/// Records a started child.
pub(crate) fn register(child: Arc<ChildState>) {
    children().push(child);
}

/// Forgets a child (after it was joined or closed).
pub(crate) fn forget(child: &Arc<ChildState>) {
    children().retain(|c| !Arc::ptr_eq(c, child));
}

/// Reaps finished children and returns the live ones.
pub(crate) fn live_children() -> Vec<Arc<ChildState>> {
    let mut table = children();
    table.retain(|c| matches!(c.process.poll(), Ok(None)));
    table.clone()
}

/// Terminates daemonic children, joins the others, removes this process's
/// private directory. Idempotent; `#[mproc::main]` runs it after `main`'s
/// body, `init()` registers it to run at exit, and a child runs it after
/// its target.
pub fn exit_procedure() {
    failed::before_exit();
    let snapshot: Vec<Arc<ChildState>> = children().clone();
    for c in snapshot.iter().filter(|c| c.daemon) {
        if let Err(e) = c.process.terminate() {
            tracing::warn!(
                pid = c.process.pid(),
                "cannot terminate a daemonic child: {e}"
            );
        }
    }
    for c in &snapshot {
        tracing::debug!(pid = c.process.pid(), "joining child at exit");
        failed::before_wait(c);
        let _ = c.process.wait(None);
        forget(c);
    }
    sys::cleanup_runtime_dir();
}

extern "C" fn exit_hook() {
    exit_procedure();
}

static HOOK: std::sync::Once = std::sync::Once::new();

/// Makes the exit procedure run when this process exits normally (once,
/// however often it is called). `init()` calls it, a child's bootstrap
/// does, and so does the first `start()`/`spawn()`: like CPython, which
/// registers `_exit_function` when multiprocessing is first used, a
/// program without `#[mproc::main]` or `init()` (a plain `main`, a plain
/// `#[test]`) still joins its non-daemonic children at exit instead of
/// leaving them to die mid-launch.
pub(crate) fn install_exit_hook() {
    HOOK.call_once(|| {
        sys::at_exit(exit_hook);
    });
}
