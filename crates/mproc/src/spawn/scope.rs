//! What becomes of the children of a `#[mproc::test]` or `#[mproc::main]`
//! that fails (panics, or returns `Err`).
//!
//! * A **test** that fails must end, so that its failure is reported: the
//!   children it started on its own thread and that still run when it
//!   fails are terminated (daemonic or not), each named on stderr. libtest
//!   runs tests on threads of one process, so each test's children are
//!   tracked by the thread that runs it (a thread-local list), never
//!   through the process-wide table: a failing test touches no other
//!   test's children. A test that passes leaves its children as they are
//!   (the exit procedure joins them, as in any program). Children started
//!   on a thread that runs no test are recorded too: once a test failed,
//!   the exit procedure terminates those still running (`failed.rs`).
//! * A **main** that fails keeps CPython's behaviour (`_exit_function`
//!   joins non-daemonic children after an uncaught exception too): the
//!   exit procedure still joins them, and first says on stderr which
//!   child it waits for, so that a program that seems hung tells why.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::exit;
use super::failed;
use super::started::ChildState;

thread_local! {
    /// The children started on this thread while a test runs on it;
    /// `None` outside a test.
    static TEST_CHILDREN: RefCell<Option<Vec<Weak<ChildState>>>> = const { RefCell::new(None) };
}

/// Adds a child just started on this thread to the running test's
/// children, or to the untracked ones if no test runs on this thread.
pub(crate) fn adopt(child: &Arc<ChildState>) {
    let tracked = TEST_CHILDREN
        .try_with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return false;
            };
            let Some(list) = slot.as_mut() else {
                return false;
            };
            failed::keep_short(list);
            list.push(Arc::downgrade(child));
            true
        })
        .unwrap_or(false);
    if !tracked {
        failed::untracked(child);
    }
}

/// How a test or `main` ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    Passed,
    Panicked,
    ReturnedErr,
}

impl Ending {
    fn words(self) -> &'static str {
        match self {
            Ending::Passed => "passed",
            Ending::Panicked => "panicked",
            Ending::ReturnedErr => "returned Err",
        }
    }
}

/// One `#[mproc::test]` run, from its first line to its end (made by the
/// macro; not for direct use). Dropped while its thread panics, the test
/// failed: see the module's doc.
#[doc(hidden)]
pub struct TestScope {
    name: &'static str,
    expects_panic: bool,
    /// The enclosing scope's list (a test fn called from another).
    outer: Option<Vec<Weak<ChildState>>>,
    ended: bool,
}

impl TestScope {
    /// Starts tracking the children this thread starts. `name` is the
    /// test's path (`module_path!()::fn`); `expects_panic` is set for a
    /// `#[should_panic]` test.
    pub fn enter(name: &'static str, expects_panic: bool) -> TestScope {
        let outer = TEST_CHILDREN
            .try_with(|cell| {
                cell.try_borrow_mut()
                    .ok()
                    .and_then(|mut slot| slot.replace(Vec::new()))
            })
            .ok()
            .flatten();
        TestScope {
            name,
            expects_panic,
            outer,
            ended: false,
        }
    }

    /// The test returned; `failed` if it returned `Err`.
    pub fn finish(mut self, failed: bool) {
        self.end(if failed {
            Ending::ReturnedErr
        } else {
            Ending::Passed
        });
    }

    fn end(&mut self, ending: Ending) {
        if self.ended {
            return;
        }
        self.ended = true;
        let outer = self.outer.take();
        let mine = TEST_CHILDREN
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut slot) => std::mem::replace(&mut *slot, outer),
                Err(_) => None,
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        if ending == Ending::Passed {
            // Today's behaviour: the exit procedure joins them. An
            // enclosing test tracks them from now on.
            let _ = TEST_CHILDREN.try_with(|cell| {
                if let Ok(mut slot) = cell.try_borrow_mut() {
                    if let Some(list) = slot.as_mut() {
                        list.extend(mine);
                    }
                }
            });
            return;
        }
        let test = self.name.split_once("::").map_or(self.name, |(_, t)| t);
        let why = if ending == Ending::Panicked && self.expects_panic {
            // A pass: its children go all the same, or they could keep
            // the binary from ending.
            format!("test {test} panicked (#[should_panic])")
        } else {
            failed::test_failed();
            format!("test {test} failed ({})", ending.words())
        };
        let mine: Vec<Arc<ChildState>> = mine.iter().filter_map(Weak::upgrade).collect();
        failed::terminate_live(&why, "which it started and did not join", &mine);
        for c in &mine {
            exit::forget(c);
        }
    }
}

impl Drop for TestScope {
    fn drop(&mut self) {
        if !self.ended {
            // Only an unwinding test body skips `finish`.
            self.end(if std::thread::panicking() {
                Ending::Panicked
            } else {
                Ending::Passed
            });
        }
    }
}

/// `#[mproc::main]`'s body, from its first line to its end (made by the
/// macro; not for direct use): a `main` that panics or returns `Err` has
/// the exit procedure name each child it still waits for.
#[doc(hidden)]
pub struct MainScope {
    ended: bool,
}

impl MainScope {
    /// `main`'s body begins.
    pub fn enter() -> MainScope {
        MainScope { ended: false }
    }

    /// `main`'s body returned; `failed` if it returned `Err`.
    pub fn finish(mut self, failed: bool) {
        self.ended = true;
        if failed {
            failed::main_failed(Ending::ReturnedErr.words());
        }
    }
}

impl Drop for MainScope {
    fn drop(&mut self) {
        if !self.ended && std::thread::panicking() {
            failed::main_failed(Ending::Panicked.words());
        }
    }
}

/// Whether a test's or `main`'s return value is a failure: `Err` for a
/// `Result`, never for anything else (see [`ReturnedErr`] and
/// [`ReturnedAnything`]; the macros call `(&Outcome(&value)).failed()`,
/// which picks the first where it applies).
#[doc(hidden)]
pub struct Outcome<'a, T>(pub &'a T);

/// [`Outcome`] of a `Result`: failed when it is `Err`.
#[doc(hidden)]
pub trait ReturnedErr {
    /// Whether the value is `Err`.
    fn failed(&self) -> bool;
}

impl<T, E> ReturnedErr for Outcome<'_, std::result::Result<T, E>> {
    fn failed(&self) -> bool {
        self.0.is_err()
    }
}

/// [`Outcome`] of any other value (`()`, `ExitCode`, ...): not a failure
/// that mproc can see.
#[doc(hidden)]
pub trait ReturnedAnything {
    /// Always `false`.
    fn failed(&self) -> bool;
}

impl<T> ReturnedAnything for &Outcome<'_, T> {
    fn failed(&self) -> bool {
        false
    }
}
