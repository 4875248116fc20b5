//! Unix half of the tests' OS helpers (see `mod.rs`).

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
