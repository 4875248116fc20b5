//! The one check of a refused launch token, for the inherited-channel
//! tests (`tests/launch_channel.rs`, `tests/sys/launch_channel_unix.rs`,
//! `tests/sys/launch_channel_windows.rs`). A test binary includes it with
//! `#[path = "../common/refused.rs"] mod refused;`.

use std::process::Output;

/// The fixture was refused before its `main`: exit 121, one line on
/// stderr saying it cannot start and why (`why`), nothing on stdout
/// (`main` would have started a child and printed).
pub fn assert_refused(out: &Output, why: &str) {
    assert_eq!(
        out.status.code(),
        Some(mproc::BOOTSTRAP_EXIT_CODE),
        "{why}: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot start"), "{stderr}");
    assert!(stderr.contains(why), "{why}: {stderr}");
    assert!(out.stdout.is_empty(), "main ran: {out:?}");
}
