//! What the exit procedure does differently once a test or `main` failed
//! (`scope.rs` records the failures; `exit.rs` asks here).
//!
//! * After a failed `#[mproc::test]`, the children started on a thread
//!   that ran no test (a thread a test spawned, a plain `#[test]`) and
//!   still running at exit are terminated, each named on stderr: a test
//!   binary that failed must end. (Each failed test has already
//!   terminated the children its own thread started.)
//! * After `#[mproc::main]` panicked or returned `Err`, the exit procedure
//!   still joins the non-daemonic children, as CPython does, and first
//!   names on stderr each one it waits for.

use mproc_ipc::__private::lock::lock;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::started::ChildState;

/// How long a child being terminated has to end after SIGTERM before it
/// is killed (one that handles or ignores SIGTERM must not hang a failed
/// test binary either). Not a readiness wait: it bounds a wait that
/// normally ends at once.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How `#[mproc::main]`'s body failed ("panicked", "returned Err").
static MAIN_FAILED: OnceLock<&'static str> = OnceLock::new();

/// How many `#[mproc::test]`s failed in this process.
static TESTS_FAILED: AtomicUsize = AtomicUsize::new(0);

/// The children started on a thread that ran no test.
static UNTRACKED: Mutex<Vec<Weak<ChildState>>> = Mutex::new(Vec::new());

/// Records that `main`'s body failed.
pub(crate) fn main_failed(how: &'static str) {
    let _ = MAIN_FAILED.set(how);
}

/// Records that a test failed.
pub(crate) fn test_failed() {
    TESTS_FAILED.fetch_add(1, Ordering::AcqRel);
}

/// Records a child started on a thread that runs no test.
pub(crate) fn untracked(child: &Arc<ChildState>) {
    let mut list = lock(&UNTRACKED);
    keep_short(&mut list);
    list.push(Arc::downgrade(child));
}

/// Drops the entries of children that are gone (joined, forgotten and
/// dropped) as `list` doubles, so that a process starting many children
/// keeps it short.
pub(crate) fn keep_short(list: &mut Vec<Weak<ChildState>>) {
    if list.len() >= 64 && list.len().is_power_of_two() {
        list.retain(|w| w.strong_count() > 0);
    }
}

/// At the start of the exit procedure: after a failed test, terminates
/// the live children started outside any test's thread.
pub(crate) fn before_exit() {
    let failed = TESTS_FAILED.load(Ordering::Acquire);
    if failed == 0 {
        return;
    }
    let children: Vec<Arc<ChildState>> = std::mem::take(&mut *lock(&UNTRACKED))
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let why = format!(
        "exiting after {failed} failed test{}",
        if failed == 1 { "" } else { "s" }
    );
    terminate_live(&why, "started on a thread of no test", &children);
}

/// Before the exit procedure waits for `c`: after `main` failed, says so
/// on stderr if `c` still runs.
pub(crate) fn before_wait(c: &ChildState) {
    let Some(how) = MAIN_FAILED.get() else {
        return;
    };
    if !c.daemon && matches!(c.process.poll(), Ok(None)) {
        let _ = writeln!(
            std::io::stderr(),
            "mproc: main {how}; waiting at exit for Process {} (pid {}), which it started and \
             did not join, as CPython does (terminate or join it, or make it daemonic, to exit \
             without waiting)",
            c.name,
            c.process.pid()
        );
    }
}

/// Terminates those of `children` that still run, each named on stderr
/// (`mproc: {why}; terminating Process {name} (pid {pid}), {whose}`), and
/// waits for them, killing one that outlives [`TERMINATE_GRACE`].
pub(crate) fn terminate_live(why: &str, whose: &str, children: &[Arc<ChildState>]) {
    let live: Vec<&Arc<ChildState>> = children
        .iter()
        .filter(|c| matches!(c.process.poll(), Ok(None)))
        .collect();
    for c in &live {
        let _ = writeln!(
            std::io::stderr(),
            "mproc: {why}; terminating Process {} (pid {}), {whose}",
            c.name,
            c.process.pid()
        );
        c.stopping();
        if let Err(e) = c.process.terminate() {
            tracing::warn!(pid = c.process.pid(), "cannot terminate a child: {e}");
        }
    }
    for c in &live {
        if matches!(c.process.wait(Some(TERMINATE_GRACE)), Ok(None)) {
            let _ = writeln!(
                std::io::stderr(),
                "mproc: Process {} (pid {}) still runs {TERMINATE_GRACE:?} after SIGTERM; \
                 killing it",
                c.name,
                c.process.pid()
            );
            let _ = c.process.kill();
            let _ = c.process.wait(None);
        }
    }
}
