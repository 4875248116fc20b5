//! Fault injection for mproc's own test suite: `MPROC_TEST_FAULT=<stage>`.
//!
//! Compiled only with the `test-fault` feature, which the workspace's
//! dev-dependency enables for the test suite: in any other build (a
//! user's release build among them) every check here is a constant
//! `false`, and the variable does nothing.

/// Whether the test suite asked for the fault `stage`.
#[cfg(feature = "test-fault")]
pub(crate) fn requested(stage: &str) -> bool {
    std::env::var_os("MPROC_TEST_FAULT").is_some_and(|f| f == *stage)
}

/// Without the `test-fault` feature no fault is ever requested.
#[cfg(not(feature = "test-fault"))]
#[inline(always)]
pub(crate) fn requested(_stage: &str) -> bool {
    false
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
