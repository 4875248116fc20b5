//! Fault injection for mproc's own test suite: `MPROC_TEST_FAULT=<stage>`
//! (several: comma-separated).
//!
//! Compiled only with the `test-fault` feature, which the workspace's
//! dev-dependency enables for the test suite: in any other build (a
//! user's release build among them) every check here is a constant
//! `false`, and the variable does nothing.

/// Whether the test suite asked for the fault `stage`.
#[cfg(feature = "test-fault")]
pub(crate) fn requested(stage: &str) -> bool {
    std::env::var("MPROC_TEST_FAULT").is_ok_and(|f| f.split(',').any(|f| f == stage))
}

/// Without the `test-fault` feature no fault is ever requested.
#[cfg(not(feature = "test-fault"))]
#[inline(always)]
pub(crate) fn requested(_stage: &str) -> bool {
    false
}

/// What the test suite asked a child to do at a stage of its bootstrap.
#[cfg_attr(not(feature = "test-fault"), allow(dead_code))]
pub(crate) enum AtStage {
    /// Exit with code 7.
    Die,
    /// Hang there.
    Hang,
}

/// A forkserver's forked child (`forkserver::become_forked_child`): the
/// faults `forked-<fault>` apply to it (and not to the server, which
/// starts the same way).
#[cfg(feature = "test-fault")]
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this process as a forkserver's forked child.
#[cfg(feature = "test-fault")]
pub(crate) fn mark_forked() {
    FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Without the `test-fault` feature nothing is marked.
#[cfg(not(feature = "test-fault"))]
#[inline(always)]
pub(crate) fn mark_forked() {}

/// The fault the test suite asked for at `stage` of a child's bootstrap:
/// `<stage>` (die) or `hang-<stage>`, in any child; prefixed `forked-`,
/// only in a forkserver's forked child.
#[cfg(feature = "test-fault")]
pub(crate) fn at_stage(stage: &str) -> Option<AtStage> {
    let faults = std::env::var("MPROC_TEST_FAULT").ok()?;
    let forked = FORKED.load(std::sync::atomic::Ordering::Relaxed);
    faults.split(',').find_map(|fault| {
        let fault = match fault.strip_prefix("forked-") {
            Some(rest) if forked => rest,
            Some(_) => return None,
            None => fault,
        };
        if fault == stage {
            Some(AtStage::Die)
        } else if fault.strip_prefix("hang-") == Some(stage) {
            Some(AtStage::Hang)
        } else {
            None
        }
    })
}

/// Without the `test-fault` feature no fault is ever requested.
#[cfg(not(feature = "test-fault"))]
#[inline(always)]
pub(crate) fn at_stage(_stage: &str) -> Option<AtStage> {
    None
}

/// Fills `buf` from the OS random source; an error (never a zero-filled
/// buffer) when the source fails. The fault `random` makes it fail.
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    if requested("random") {
        return Err(std::io::Error::other(
            "the OS random source failed (MPROC_TEST_FAULT=random)",
        ));
    }
    getrandom::getrandom(buf)
        .map_err(|e| std::io::Error::other(format!("cannot read random bytes from the OS: {e}")))
}
