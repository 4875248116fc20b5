//! How the parent names the code a child runs: the child's entry fn
//! ([`EntryFn`], what it gets and gives: [`EntryInput`], [`ChildOutcome`])
//! and a pool task runner ([`TaskFn`]), by their offsets from
//! [`anchor`]; and the [`build_mark`] that tells the child it runs the
//! parent's very executable. The parent computes offsets (`parent.rs`,
//! a pool), the child and the registry turn them back into fns.

use mproc_ipc::__private::sys::OwnedHandle;

use super::record::{Ack, Report};

/// What an entry fn gets: the encoded arguments, their handles, and the
/// acknowledgement to send once they are decoded.
#[doc(hidden)]
pub struct EntryInput<'a> {
    pub(crate) args: Vec<u8>,
    pub(crate) handles: Vec<OwnedHandle>,
    pub(crate) ack: &'a mut dyn FnMut(Ack),
}

/// How the target ended.
#[doc(hidden)]
pub struct ChildOutcome {
    pub(crate) exitcode: i32,
    /// `None` when the arguments did not decode (already acknowledged as such).
    pub(crate) report: Option<Report>,
}

/// A monomorphised entry: decodes the args, runs the target.
#[doc(hidden)]
pub type EntryFn = fn(EntryInput<'_>) -> ChildOutcome;

/// The fixed point offsets are taken from. Its body is unique so that no
/// linker folds it with another fn.
#[inline(never)]
pub(crate) fn anchor() -> u64 {
    std::hint::black_box(0x6d70_726f_635f_616e)
}

fn anchor_addr() -> usize {
    anchor as fn() -> u64 as usize
}

static BUILD_MARK: [u8; 8] = *b"mprocbld";

/// Offset of a static from the anchor: equal in parent and child exactly
/// when they run the same executable image.
pub(crate) fn build_mark() -> i64 {
    (std::hint::black_box(&BUILD_MARK) as *const _ as usize).wrapping_sub(anchor_addr()) as i64
}

pub(crate) fn offset_of(entry: EntryFn) -> i64 {
    (entry as usize).wrapping_sub(anchor_addr()) as i64
}

/// A monomorphised pool task runner (`pool::worker::task_entry`, or an
/// initializer's `pool::worker::init_entry`): takes the encoded
/// arguments, returns the frame to send back to the pool.
pub(crate) type TaskFn = fn(&[u8]) -> Vec<u8>;

/// Offset of a pool task runner from the anchor (as [`offset_of`]).
pub(crate) fn task_offset(task: TaskFn) -> i64 {
    (task as usize).wrapping_sub(anchor_addr()) as i64
}
