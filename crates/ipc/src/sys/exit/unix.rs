//! Unix: the C library's `atexit`.

extern "C" {
    // The C library's `atexit`.
    fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
}

/// Registers `hook` to run at normal exit (`main` returning, or
/// `std::process::exit`), in reverse order of registration (the C
/// library's `atexit`). Returns whether it was registered.
///
/// `hook` must not unwind.
pub fn at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: `atexit` with a plain `extern "C" fn()`; the caller promises
    // it does not unwind.
    unsafe { atexit(hook) == 0 }
}

/// Ends this process at once, without running exit handlers (the daemon
/// watchdog, when the parent is gone).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}
