//! Unix half of the tests' OS helpers (see `mod.rs`).

use std::io;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

/// A `Local` address is a socket file that exists while it is bound.
pub const LOCAL_ADDRESS_IS_A_FILE: bool = true;

/// Kills this process the hardest way the OS has (SIGKILL: no unwinding,
/// no exit code of its own choosing).
pub fn kill_self_hard() {
    // SAFETY: plain libc calls on this process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Whether the OS no longer knows `pid` as a process.
pub fn os_pid_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == -1 }
}

/// CPU time this process has used (user + system); always known on Unix.
pub fn cpu_time() -> Option<Duration> {
    // SAFETY: a zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(r, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// The threads of this process, where the OS lists them (Linux: `/proc`).
#[cfg(target_os = "linux")]
pub fn threads_of_this_process() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()))
}

/// The threads of this process: not listed without `/proc`.
#[cfg(not(target_os = "linux"))]
pub fn threads_of_this_process() -> Option<usize> {
    None
}

/// The descriptors this process has open, where the OS lists them
/// (Linux: `/proc`).
#[cfg(target_os = "linux")]
pub fn open_descriptors() -> Option<usize> {
    Some(
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0),
    )
}

/// The descriptors this process has open: not listed without `/proc`.
#[cfg(not(target_os = "linux"))]
pub fn open_descriptors() -> Option<usize> {
    None
}

#[cfg(target_os = "linux")]
fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Those of `pids` that are zombie children of this process, where the OS
/// tells (Linux: `/proc`).
#[cfg(target_os = "linux")]
pub fn zombie_children_among(pids: &[u32]) -> Option<Vec<u32>> {
    let zombies = pids
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    let ppid = s
                        .rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().nth(1));
                    ppid == Some(&std::process::id().to_string()) && is_zombie_or_gone(*pid)
                })
                .unwrap_or(false)
        })
        .collect();
    Some(zombies)
}

/// Zombie children: not listed without `/proc`.
#[cfg(not(target_os = "linux"))]
pub fn zombie_children_among(_pids: &[u32]) -> Option<Vec<u32>> {
    None
}

/// Kills `pid` from outside this process, as a user or the OOM killer
/// would (`kill -9`).
pub fn kill_from_outside(pid: u32) {
    let status = command_status(Command::new("kill").args(["-9", &pid.to_string()]));
    assert!(status.expect("run kill").success(), "kill {pid}");
}

/// `cmd.spawn()`. The Windows twin starts again a child that died in
/// Wine's loader before any of its code ran; `fork`/`exec` has no such
/// failure (a failed `exec` is the program's own error), so here it is
/// one start. Every test starts its programs through this,
/// [`command_output`] or [`command_status`].
pub fn spawn_command(cmd: &mut Command) -> io::Result<Child> {
    cmd.spawn()
}

/// `cmd.output()` (see [`spawn_command`]).
pub fn command_output(cmd: &mut Command) -> io::Result<Output> {
    cmd.output()
}

/// `cmd.status()` (see [`spawn_command`]).
pub fn command_status(cmd: &mut Command) -> io::Result<ExitStatus> {
    cmd.status()
}

/// The reusable large-item objects this process holds (its queue
/// producers' pools: memfds named `mproc-item`), where the OS lists them
/// (Linux: `/proc`).
#[cfg(target_os = "linux")]
pub fn item_objects() -> Option<usize> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("/memfd:mproc-item"))
            .count(),
    )
}

/// Reusable large-item objects: none without `/proc` to list them.
#[cfg(not(target_os = "linux"))]
pub fn item_objects() -> Option<usize> {
    None
}

/// Starts `cmd` as the leader of a process group of its own, so that
/// [`kill_group`] reaches whatever it started.
pub fn in_own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// SIGKILLs what is left of the process group `leader` leads (started
/// with [`in_own_group`]): a hung child outlives its test process. Quiet
/// when nothing is left.
pub fn kill_group(leader: u32) {
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{leader}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The exit code `Process::exitcode` reports for a child that
/// [`kill_from_outside`] killed: `-SIGKILL`.
pub const KILLED_FROM_OUTSIDE: Option<i32> = Some(-9);
