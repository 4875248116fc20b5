//! Unix: secure mode, wiping the environment block, SIGPIPE.

/// Signals and other process-wide settings a child needs before its target
/// runs (the child may start before std's own runtime set-up).
pub fn prepare_child() {
    // Rust's main ignores SIGPIPE; a child started from a constructor has
    // not been through that yet: writes to a closed peer must be EPIPE.
    // SAFETY: setting a signal disposition to SIG_IGN is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Whether the kernel started this process in secure mode: set-user-ID,
/// set-group-ID or with file capabilities (`getauxval(AT_SECURE)`, the
/// rule of glibc's `secure_getenv`; `issetugid()` on the BSDs and macOS;
/// elsewhere real and effective ids differ).
pub fn secure_exec() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: getauxval only reads the auxiliary vector.
        unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
    }
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))]
    {
        // SAFETY: issetugid has no arguments and only reads process state.
        unsafe { libc::issetugid() != 0 }
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    )))]
    {
        rustix::process::getuid() != rustix::process::geteuid()
            || rustix::process::getgid() != rustix::process::getegid()
    }
}

/// Removes `name` from the environment, and on Linux also wipes its bytes
/// (name and value) in place, in the string the environment array points
/// at: for a variable inherited at exec that is the process's initial
/// environment block, which is what `/proc/<pid>/environ` shows other
/// processes. Must run before any other thread exists (a constructor).
pub fn scrub_env(name: &str) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    wipe_env_entries(name);
    // Elsewhere the variable goes from the array only; on Linux there is
    // nothing left to remove by now.
    std::env::remove_var(name);
}

/// Wipes every "NAME=value" string of `name` in the C library's
/// environment array, then takes its pointer out of the array (as
/// `unsetenv` does), without freeing anything.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn wipe_env_entries(name: &str) {
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    let prefix = format!("{name}=");
    // SAFETY: no other thread runs (constructor), so nothing else reads or
    // changes the array or its strings meanwhile. The array is
    // null-terminated and each entry is a NUL-terminated string that
    // stays allocated and writable for the process's life: the initial
    // block on the stack, or a string the C library allocated and never
    // frees while it is in the array. Each string is wiped while it is
    // still in the array, then its slot is closed up by moving the later
    // pointers (and the terminating null) down one place.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return;
        }
        while !(*p).is_null() {
            let entry = std::ffi::CStr::from_ptr(*p);
            if !entry.to_bytes().starts_with(prefix.as_bytes()) {
                p = p.add(1);
                continue;
            }
            std::ptr::write_bytes((*p).cast::<u8>(), 0, entry.to_bytes().len());
            let mut q = p;
            loop {
                *q = *q.add(1);
                if (*q).is_null() {
                    break;
                }
                q = q.add(1);
            }
        }
    }
}
