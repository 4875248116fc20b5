//! Windows: no secure mode, no signals.

/// Nothing to set up on Windows (no SIGPIPE).
pub fn prepare_child() {}

/// Windows has no set-user-ID programs: a process of another account or
/// an elevated one gets its environment from its own profile, not from
/// the user who started it, so there is no secure mode to detect.
pub fn secure_exec() -> bool {
    false
}

/// Removes `name` from the environment. Windows keeps the environment
/// in the process's own memory (its PEB), readable by others only with
/// `PROCESS_VM_READ` on it, that is by this user's processes with rights
/// over it (which could read the token in memory anyway).
pub fn scrub_env(name: &str) {
    std::env::remove_var(name);
}
