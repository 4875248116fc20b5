//! What a process does with its queues when it exits.
//!
//! Two hooks run at normal exit (`main` returning, or
//! `std::process::exit` — on Windows through the `ExitProcess` hook of
//! `sys::at_exit`, while every thread is still alive):
//!
//! * the *hand-over* hook, registered when the process first holds a
//!   queue: every feeder writes out what this process put (unless
//!   `cancel_join_thread` was called) and received items that were never
//!   taken go back to their queue. Registered at run time, it runs before
//!   hooks registered earlier, mproc's exit procedure among them (which
//!   joins the children): the feeder thread writes on while they run.
//! * the *close* hook, registered before `main`: the broker stops
//!   listening and its socket file goes. Registered first, it runs last,
//!   after the children were joined, so no child finds the broker gone.
//!   A child process runs its target inside mproc's own life-before-main
//!   constructor, possibly before this crate's constructor ran; there the
//!   hand-over hook closes the broker itself (a child's exit procedure has
//!   joined its own children before it exits).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use super::{broker, live_holds, Link};
use crate::sys;

/// Set by the constructor, which registered the close hook.
static CLOSE_HOOK: AtomicBool = AtomicBool::new(false);
static HAND_OVER_HOOK: Once = Once::new();

/// Registers with the platform's exit hooks (`atexit`; on Windows also
/// the `ExitProcess` hook, so that they run at `std::process::exit` there
/// too). Each hook catches its own panics.
fn register(hook: extern "C" fn()) -> bool {
    sys::at_exit(hook)
}

#[ctor::ctor]
fn register_close_hook() {
    if register(close_hook) {
        CLOSE_HOOK.store(true, Ordering::Release);
    }
}

/// Registers the hand-over hook (once per process).
pub(super) fn install() {
    HAND_OVER_HOOK.call_once(|| {
        if !register(hand_over_hook) {
            tracing::warn!(
                "cannot register the queue exit hook: items put just before exit may be lost"
            );
        }
    });
}

extern "C" fn hand_over_hook() {
    let _ = std::panic::catch_unwind(|| {
        for inner in live_holds() {
            if let Link::Remote(r) = &inner.link {
                r.at_exit(!inner.cancelled.load(Ordering::Acquire));
            }
        }
        if !CLOSE_HOOK.load(Ordering::Acquire) {
            broker::close();
        }
    });
}

extern "C" fn close_hook() {
    let _ = std::panic::catch_unwind(broker::close);
}
