//! `CreateProcessW` with a handle list: a re-exec'd child that inherits
//! exactly its launch channel's end and its standard handles
//! (`ChildProcess::spawn_inheriting`, docs/platforms.md "The inherited
//! launch channel").
//!
//! std's `Command` cannot pass `PROC_THREAD_ATTRIBUTE_HANDLE_LIST` on
//! stable Rust, so this does what std's
//! `library/std/src/sys/pal/windows/process.rs` does for
//! `Command::new(exe).env(k, v).stdin(Stdio::null()).spawn()`: the
//! program quoted as the command line (`make_command_line`: always
//! quoted, no arguments), this environment with the token set as a
//! sorted Unicode block (`make_envp`, `CREATE_UNICODE_ENVIRONMENT`),
//! stdin an inheritable handle on `NUL`, stdout and stderr inheritable
//! duplicates of this process's (`Stdio::Inherit`; absent ones passed as
//! null), `STARTF_USESTDHANDLES`, `bInheritHandles = TRUE`.

use std::ffi::OsString;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_SAME_ACCESS, GENERIC_READ, HANDLE, INVALID_HANDLE_VALUE, TRUE,
};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE, STD_OUTPUT_HANDLE};
use windows_sys::Win32::System::Threading::{
    CreateProcessW, DeleteProcThreadAttributeList, GetCurrentProcess,
    InitializeProcThreadAttributeList, UpdateProcThreadAttribute, CREATE_SUSPENDED,
    CREATE_UNICODE_ENVIRONMENT, EXTENDED_STARTUPINFO_PRESENT, LPPROC_THREAD_ATTRIBUTE_LIST,
    PROCESS_INFORMATION, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, STARTF_USESTDHANDLES, STARTUPINFOEXW,
};

/// A process just created: its handle and id, and its first thread's
/// handle when it was created suspended.
pub(super) struct Created {
    pub(super) process: OwnedHandle,
    pub(super) pid: u32,
    pub(super) suspended: Option<OwnedHandle>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// `s` as UTF-16 without a NUL inside (std: "nul byte found in provided
/// data").
fn no_nuls(s: &std::ffi::OsStr) -> io::Result<Vec<u16>> {
    let w: Vec<u16> = s.encode_wide().collect();
    if w.contains(&0) {
        return Err(invalid("nul byte found in provided data"));
    }
    Ok(w)
}

/// The command line std makes for `exe` with no arguments: the program
/// name, always quoted (a path cannot hold a quote), NUL-terminated.
pub(super) fn command_line(exe: &Path) -> io::Result<Vec<u16>> {
    let prog = no_nuls(exe.as_os_str())?;
    if prog.contains(&u16::from(b'"')) {
        return Err(invalid("a quote in the program's path"));
    }
    let mut cmd = Vec::with_capacity(prog.len() + 3);
    cmd.push(u16::from(b'"'));
    cmd.extend_from_slice(&prog);
    cmd.push(u16::from(b'"'));
    cmd.push(0);
    Ok(cmd)
}

/// Environment names compare case-insensitively on Windows.
fn env_key(k: &std::ffi::OsStr) -> String {
    k.to_string_lossy().to_uppercase()
}

/// This environment with `token_env=token` (any other spelling of that
/// name dropped), as a Unicode environment block sorted by upper-cased
/// name, as std's `make_envp` makes it for a `Command` with one variable
/// set.
pub(super) fn environment_block(token_env: &str, token: &str) -> io::Result<Vec<u16>> {
    let wanted = env_key(token_env.as_ref());
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| env_key(k) != wanted)
        .collect();
    vars.push((token_env.into(), token.into()));
    vars.sort_by_cached_key(|(k, _)| env_key(k));
    let mut block = Vec::new();
    for (k, v) in &vars {
        block.extend(no_nuls(k)?);
        block.push(u16::from(b'='));
        block.extend(no_nuls(v)?);
        block.push(0);
    }
    block.push(0);
    Ok(block)
}

/// The null device opened for reading, inheritable (std's `Stdio::Null`
/// for stdin).
fn null_input() -> io::Result<OwnedHandle> {
    let name = crate::sys::stream::wide("NUL");
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: std::ptr::null_mut(),
        bInheritHandle: TRUE,
    };
    // SAFETY: a NUL-terminated name and valid attributes; owned below.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            &sa,
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// An inheritable duplicate of `h` (std's `Stdio::Inherit`).
pub(super) fn inheritable_copy(h: HANDLE) -> io::Result<OwnedHandle> {
    let mut dup: HANDLE = std::ptr::null_mut();
    // SAFETY: `h` is open (the caller's), `dup` a valid out pointer.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            h,
            GetCurrentProcess(),
            &mut dup,
            0,
            TRUE,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(dup as RawHandle) })
}

/// An inheritable copy of this process's standard handle `which`, or
/// `None` when it has none (std then passes a null handle).
fn inherited_std(which: u32) -> io::Result<Option<OwnedHandle>> {
    // SAFETY: a plain query.
    let h = unsafe { GetStdHandle(which) };
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return Ok(None);
    }
    inheritable_copy(h).map(Some)
}

/// A process thread attribute list with one attribute: the handle list.
/// The list and the handle values it points at live as long as this.
struct HandleList {
    buf: Vec<u64>,
    handles: Vec<HANDLE>,
}

impl HandleList {
    fn new(handles: Vec<HANDLE>) -> io::Result<HandleList> {
        let mut size = 0usize;
        // SAFETY: the documented size query: a null list and a valid out
        // pointer (it fails with ERROR_INSUFFICIENT_BUFFER by design).
        unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), 1, 0, &mut size) };
        if size == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut list = HandleList {
            buf: vec![0u64; size.div_ceil(8)],
            handles,
        };
        // SAFETY: `buf` holds at least `size` bytes, 8-aligned.
        if unsafe { InitializeProcThreadAttributeList(list.ptr(), 1, 0, &mut size) } == 0 {
            list.buf = Vec::new();
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the list was initialised above; the value points at
        // `handles`, which lives (unmoved: a Vec's heap buffer) as long as
        // the list.
        let ok = unsafe {
            UpdateProcThreadAttribute(
                list.ptr(),
                0,
                PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
                list.handles.as_ptr().cast(),
                list.handles.len() * std::mem::size_of::<HANDLE>(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(list)
    }

    fn ptr(&mut self) -> LPPROC_THREAD_ATTRIBUTE_LIST {
        self.buf.as_mut_ptr().cast()
    }
}

impl Drop for HandleList {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            // SAFETY: initialised in `new` (an empty `buf` marks a list
            // that was not), deleted once.
            unsafe { DeleteProcThreadAttributeList(self.ptr()) };
        }
    }
}

/// Starts `exe` with the environment block `env`, stdin from `NUL`,
/// stdout and stderr inherited, inheriting exactly those three handles
/// and `extra` (each inheritable: the caller makes it so for this call
/// alone); `suspended`, with its first thread not yet run
/// (`CREATE_SUSPENDED`: the caller resumes it).
pub(super) fn create(
    exe: &Path,
    env: &[u16],
    extra: &[HANDLE],
    suspended: bool,
) -> io::Result<Created> {
    let app = no_nuls(exe.as_os_str())?
        .into_iter()
        .chain(Some(0))
        .collect::<Vec<u16>>();
    let mut cmd = command_line(exe)?;
    let stdin = null_input()?;
    let stdout = inherited_std(STD_OUTPUT_HANDLE)?;
    let stderr = inherited_std(STD_ERROR_HANDLE)?;
    let raw = |h: &Option<OwnedHandle>| {
        h.as_ref()
            .map_or(std::ptr::null_mut(), |h| h.as_raw_handle() as HANDLE)
    };
    let mut listed: Vec<HANDLE> = vec![stdin.as_raw_handle() as HANDLE];
    listed.extend(
        [raw(&stdout), raw(&stderr)]
            .into_iter()
            .filter(|h| !h.is_null()),
    );
    listed.extend_from_slice(extra);
    let mut list = HandleList::new(listed)?;
    // SAFETY: zeroed plain-data structs, filled below.
    let mut si: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
    si.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = stdin.as_raw_handle() as HANDLE;
    si.StartupInfo.hStdOutput = raw(&stdout);
    si.StartupInfo.hStdError = raw(&stderr);
    si.lpAttributeList = list.ptr();
    let mut flags = EXTENDED_STARTUPINFO_PRESENT | CREATE_UNICODE_ENVIRONMENT;
    if suspended {
        flags |= CREATE_SUSPENDED;
    }
    // SAFETY: zeroed plain data, an out parameter.
    let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated application name and (mutable) command line,
    // a NUL-NUL-terminated Unicode environment block, a STARTUPINFOEXW
    // whose attribute list and handles live until the call returns.
    let ok = unsafe {
        CreateProcessW(
            app.as_ptr(),
            cmd.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            TRUE,
            flags,
            env.as_ptr().cast(),
            std::ptr::null(),
            &si.StartupInfo,
            &mut pi,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    drop(list);
    // SAFETY: fresh handles CreateProcessW gave us, owned from here (the
    // thread's is needed only to resume it).
    let (process, thread) = unsafe {
        (
            OwnedHandle::from_raw_handle(pi.hProcess as RawHandle),
            OwnedHandle::from_raw_handle(pi.hThread as RawHandle),
        )
    };
    Ok(Created {
        process,
        pid: pi.dwProcessId,
        suspended: suspended.then_some(thread),
    })
}
