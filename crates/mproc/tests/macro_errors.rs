//! Issue 12 item 10: what `#[mproc::target]` and the API reject at compile
//! time, with words a user can follow (`tests/ui/*.rs` and the expected
//! compiler output next to each). Runs natively only: `trybuild` drives
//! this machine's cargo and rustc, which a Windows test binary under Wine
//! cannot (docs/platforms.md).
//!
//! It lives in the `mproc` package, not the workspace root's tests:
//! trybuild checks its cases against the package's dependencies and
//! dev-dependencies in a target directory of its own, so in a fresh clone
//! it is a cold check of all of them (docs/reliability.md, "Suite time").

#[test]
fn item10_compile_errors_a_user_can_follow() {
    if std::env::consts::FAMILY != "unix" {
        eprintln!("skipped: trybuild needs the host's cargo (docs/platforms.md)");
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
