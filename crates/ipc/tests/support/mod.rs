//! Helpers for hostile-input checks, shared by `tests/hostile_bytes.rs`
//! and the fuzz targets (`fuzz/src/lib.rs` includes this file by path):
//! an allocator that records the largest single allocation a check makes,
//! and the errors a receive from a hostile peer may end in.
//!
//! A directory module, so Cargo does not build it as a test of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mproc_ipc::Error;

/// The system allocator, recording the largest allocation this thread
/// makes while [`largest_allocation`] runs (tests run on many threads).
pub struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the thread may be tearing its locals down.
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every call is passed to `System` unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's guarantees for this call, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's guarantees for this call, passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees for this call, passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's guarantees for this call, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the size of the largest single
/// allocation (or reallocation) this thread made meanwhile.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(Cell::get))
}

/// Runs `f` with [`largest_allocation`]'s recording paused (for a
/// simulated peer's own work).
#[allow(dead_code)] // the fuzz targets use it, the tests do not
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    let was = TRACKING.with(|t| t.replace(false));
    let r = f();
    TRACKING.with(|t| t.set(was));
    r
}

/// The errors a receive from a peer that wrote arbitrary bytes and closed
/// may end in: anything else (or a panic) is a bug.
pub fn expected_recv_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Eof
            | Error::EofDuringMessage
            | Error::BadMessageLength
            | Error::MessageTooLarge { .. }
            | Error::BufferTooShort(_)
            | Error::TypeMismatch { .. }
            | Error::Decode(_)
            | Error::WriteOnly
            | Error::Io(_)
    )
}
