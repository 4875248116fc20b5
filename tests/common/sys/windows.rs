//! Windows half of the tests' OS helpers (see `mod.rs`).

use std::io;
use std::process::{Child, Command, ExitStatus, Output};
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
    let status = command_status(Command::new("taskkill").args(["/F", "/PID", &pid.to_string()]));
    assert!(status.expect("run taskkill").success(), "kill {pid}");
}

/// `ERROR_INTERNAL_ERROR`: what Wine's `NtCreateUserProcess` returns
/// when the new process died in Wine's loader before it reported its
/// start, that is before any code of the started program ran (the same
/// rule as the library's `spawn_retrying`, `sys/process/windows.rs`).
const ERROR_INTERNAL_ERROR: i32 = 1359;

/// How many times a start is tried while the child dies in its loader
/// (the library's `SPAWN_ATTEMPTS`).
const START_ATTEMPTS: usize = 3;

/// Runs `start` again, at most [`START_ATTEMPTS`] times in all, while
/// `CreateProcessW` fails with [`ERROR_INTERNAL_ERROR`]: such a child
/// ran none of the program's code, so the test's process was never
/// started (docs/reliability.md "Loaded runs"). Each such failure is
/// written to stderr; any other outcome is returned as it is.
fn started<T>(
    cmd: &mut Command,
    mut start: impl FnMut(&mut Command) -> io::Result<T>,
) -> io::Result<T> {
    let mut attempt = 1;
    loop {
        match start(cmd) {
            Err(e)
                if e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) && attempt < START_ATTEMPTS =>
            {
                let message = format!(
                    "test helper: starting {:?} failed in CreateProcessW ({e}), attempt {attempt} \
                     of {START_ATTEMPTS}: the child died in Wine's loader before any of its code \
                     ran; starting it again",
                    cmd.get_program()
                );
                eprintln!("{message}");
                note_for_loaded_runs(&message);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `cmd.spawn()`, with a start that died in Wine's loader done again
/// (see [`started`]). Every test starts its programs through this,
/// [`command_output`] or [`command_status`].
pub fn spawn_command(cmd: &mut Command) -> io::Result<Child> {
    started(cmd, |cmd| cmd.spawn())
}

/// `cmd.output()`, with a start that died in Wine's loader done again
/// (see [`started`]).
pub fn command_output(cmd: &mut Command) -> io::Result<Output> {
    started(cmd, |cmd| cmd.output())
}

/// `cmd.status()`, with a start that died in Wine's loader done again
/// (see [`started`]).
pub fn command_status(cmd: &mut Command) -> io::Result<ExitStatus> {
    started(cmd, |cmd| cmd.status())
}

/// Also appends `message` to the file `MPROC_TEST_START_LOG` names, when
/// set: libtest shows a passing test's stderr to no one, and the loaded
/// runs (docs/reliability.md) count these failures.
fn note_for_loaded_runs(message: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("MPROC_TEST_START_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{message}");
        }
    }
}

/// Reusable large-item objects: Windows has none (large queue items
/// travel inline there, docs/platforms.md).
pub fn item_objects() -> Option<usize> {
    None
}

/// `cmd` as it is: Windows has no process group a test needs here
/// ([`kill_group`] follows the process tree instead).
pub fn in_own_group(cmd: &mut Command) -> &mut Command {
    cmd
}

/// Kills `leader` and the processes it started (`taskkill /F /T`). Call
/// it only while `leader` lives: the tree is found from it, and a pid
/// that ended can be reused. Quiet when it fails.
pub fn kill_group(leader: u32) {
    let _ = Command::new("taskkill")
        .args(["/F", "/T", "/PID", &leader.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The exit code `Process::exitcode` reports for a child that
/// [`kill_from_outside`] killed: `taskkill`'s choice (1 on Windows, 0
/// under Wine), so not one a test can name.
pub const KILLED_FROM_OUTSIDE: Option<i32> = None;
