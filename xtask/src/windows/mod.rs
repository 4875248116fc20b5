//! `cargo xtask windows [--setup]`: the Windows half of the suite, built for
//! `x86_64-pc-windows-gnu` on this Linux machine and run under Wine.
//!
//! - `--setup` installs Debian's Rust (which can build a Windows std with
//!   `-Zbuild-std`), the MinGW linker and Wine; makes a private, headless Wine
//!   prefix at `$HOME/.cache/mproc/wine`; and, for Wine < 8.13, puts in it a
//!   tiny `bcryptprimitives.dll` (source: `win_prng.c`) without which every
//!   Rust >= 1.78 executable fails to load under Wine.
//! - without `--setup`: builds every workspace package but `xtask` (and the
//!   Unix-only ones) for Windows into `target/windows`, runs every test binary
//!   under Wine (libtest's `test result:` lines go through), then every
//!   example with `--fast`, and ends with one line of totals. Arguments after
//!   `--` go to the test binaries (e.g. a test name filter).
//!
//! Environment:
//! - `MPROC_SKIP_WINDOWS=1`: `test-all` skips the Windows suite.
//! - `MPROC_WINDOWS_TIMEOUT=SECONDS`: limit for the whole `cargo test` step
//!   (build included; default 1800).
//! - `MPROC_XTASK_ROOT=DIR`: use DIR as the workspace root instead of this
//!   one. Only for testing this module against a throwaway project.
//!
//! One run holds a lock on the prefix (`$HOME/.cache/mproc/wine.lock`), so two
//! runs on one machine take turns instead of killing each other's wineserver.
//!
//! Layout: `setup.rs` (`--setup`: packages, prefix, ProcessPrng DLL),
//! `run.rs` (the cross build, test binaries, examples, totals), `prefix.rs`
//! (where the prefix is, its lock, the Wine environment), `procs.rs` (the
//! wineserver and the Wine processes of the prefix), `metadata.rs` (the
//! workspace's packages and examples, read with serde_json). Shared with the
//! native run: `crate::exec` (running a command with streamed output and a
//! timeout) and `crate::libtest` (reading libtest's output; the closing
//! list of failing tests with the tail of their output).

mod metadata;
mod prefix;
mod procs;
mod run;
mod setup;

pub use run::run;
pub use setup::{ensure_setup, setup};

use std::path::Path;

/// Workspace packages that do not build for Windows; excluded when present.
pub const UNIX_ONLY_PACKAGES: &[&str] = &["mproc-bench"];

const TARGET: &str = "x86_64-pc-windows-gnu";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
const CARGO: &str = "/usr/bin/cargo";

fn say(msg: impl AsRef<str>) {
    eprintln!("xtask windows: {}", msg.as_ref());
}

fn is_root() -> bool {
    // Effective uid: second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
