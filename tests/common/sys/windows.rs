//! Windows half of the tests' OS helpers (see `mod.rs`).

use std::time::Duration;

/// A `Local` address is a named pipe name, not a file (and `Path::exists`
/// on it would open, that is connect to, the pipe).
pub const LOCAL_ADDRESS_IS_A_FILE: bool = false;

/// Kills this process the hardest way available to the tests without a
/// Windows API crate (abort: no unwinding, no exit code of its own
/// choosing).
pub fn kill_self_hard() {
    std::process::abort();
}

/// Whether the OS no longer knows `pid` as a process: not asked on
/// Windows (the tests have no Windows API crate), only mproc's own table
/// is.
pub fn os_pid_gone(_pid: u32) -> bool {
    true
}

/// CPU time this process has used: not measured on Windows (the tests
/// have no Windows API crate for `GetProcessTimes`).
pub fn cpu_time() -> Option<Duration> {
    None
}

/// The threads of this process: not counted on Windows (no `/proc`).
pub fn threads_of_this_process() -> Option<usize> {
    None
}

/// The handles this process has open: not counted on Windows (no
/// `/proc`).
pub fn open_descriptors() -> Option<usize> {
    None
}

/// Zombie children: Windows has none (a process object goes with its last
/// handle), and lists none to the tests.
pub fn zombie_children_among(_pids: &[u32]) -> Option<Vec<u32>> {
    None
}

/// Kills `pid` from outside this process, as a user would
/// (`taskkill /F`: `TerminateProcess`).
pub fn kill_from_outside(pid: u32) {
    let status = std::process::Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .status();
    assert!(status.expect("run taskkill").success(), "kill {pid}");
}

/// Reusable large-item objects: Windows has none (large queue items
/// travel inline there, docs/platforms.md).
pub fn item_objects() -> Option<usize> {
    None
}
