//! Named pipes: `pipe()` ends, local `Listener`s and `Client`s.
//!
//! Every pipe is created in byte mode (`PIPE_TYPE_BYTE |
//! PIPE_READMODE_BYTE`): a frame is read as its header, then exactly its
//! payload, as on any byte stream. Handles are opened for overlapped I/O
//! (`FILE_FLAG_OVERLAPPED`), because Windows serialises every synchronous
//! operation on one file object: a thread blocked in `ReadFile` would
//! otherwise block another thread's `WriteFile` on the same end (CPython's
//! `PipeConnection` is overlapped for the same reason). Each operation
//! still completes before its call returns.
//!
//! Pipes admit only the current user (a DACL with the user's SID alone),
//! the first instance of a name is created with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE` (so a name someone else holds is an
//! error, never a shared pipe) and remote clients are rejected
//! (`PIPE_REJECT_REMOTE_CLIENTS`).

use crate::util::lock::{lock, read, write};
use std::cell::OnceCell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    GetLastError, LocalFree, ERROR_ACCESS_DENIED, ERROR_BROKEN_PIPE, ERROR_FILE_NOT_FOUND,
    ERROR_INSUFFICIENT_BUFFER, ERROR_IO_PENDING, ERROR_NO_DATA, ERROR_PIPE_BUSY,
    ERROR_PIPE_CONNECTED, ERROR_PIPE_NOT_CONNECTED, ERROR_SEM_TIMEOUT, FALSE, GENERIC_READ,
    GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, TRUE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, WriteFile, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED,
    OPEN_EXISTING, PIPE_ACCESS_DUPLEX, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, GetNamedPipeClientProcessId,
    GetNamedPipeHandleStateW, GetNamedPipeInfo, PeekNamedPipe, WaitNamedPipeW, PIPE_READMODE_BYTE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{CreateEventW, GetCurrentProcess, OpenProcessToken};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

/// What every local pipe name starts with.
pub(in crate::sys) const PIPE_PREFIX: &str = r"\\.\pipe\";

/// The size of each direction's buffer (a hint to the OS).
const PIPE_BUFFER: u32 = 64 * 1024;

/// Writes go out in pieces of at most this much, so the OS never has to
/// buffer a whole big payload at once.
const WRITE_CHUNK: usize = 1 << 20;

/// The most one `ReadFile` asks for.
const READ_MAX: usize = 1 << 30;

/// How long a client waits for a busy listener (every instance taken) to
/// offer a new one (CPython's `CONNECTION_TIMEOUT`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(20);

/// `s` as a NUL-terminated UTF-16 string, for the `…W` Win32 calls (the
/// one copy every Windows backend uses).
pub(in crate::sys) fn wide(s: impl AsRef<OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(std::iter::once(0)).collect()
}

fn last_error() -> u32 {
    // SAFETY: reads this thread's last-error value.
    unsafe { GetLastError() }
}

fn os_error(code: u32) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}

fn is(e: &io::Error, code: u32) -> bool {
    e.raw_os_error() == Some(code as i32)
}

/// The error of an operation on a closed end.
fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the pipe end is closed")
}

/// The Win32 name of a local address: a `\\.\pipe\…` (or `\\?\pipe\…`)
/// path is used as it is; any other text names the pipe
/// `\\.\pipe\<text>`, so a Unix-style address still names one pipe on
/// both sides.
pub(in crate::sys) fn pipe_name(path: &Path) -> Vec<u16> {
    let text = path.as_os_str();
    let lower = text.to_string_lossy().to_ascii_lowercase();
    if lower.starts_with(r"\\.\pipe\") || lower.starts_with(r"\\?\pipe\") {
        return wide(text);
    }
    let mut name = OsString::from(PIPE_PREFIX);
    name.push(text);
    wide(&name)
}

/// A fresh pipe name: `\\.\pipe\mproc-<pid>-<n>-<random>` (CPython's
/// `arbitrary_address('AF_PIPE')` is `\\.\pipe\pyc-<pid>-<n>-<random>`).
pub(in crate::sys) fn unique_name() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    // A failure leaves zeros: the pid and counter still make it unique,
    // and FILE_FLAG_FIRST_PIPE_INSTANCE refuses a name that is taken.
    let _ = getrandom::getrandom(&mut random);
    let random = crate::util::hex::hex(&random);
    PathBuf::from(format!(
        "{PIPE_PREFIX}mproc-{}-{}-{random}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

// ---------------------------------------------------------------------------
// Security: pipes that admit only the current user.

/// A security descriptor allocated by `LocalAlloc`, immutable once built.
struct Descriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is never written after it is built and lives as
// long as the process (it is kept in a static).
unsafe impl Send for Descriptor {}
// SAFETY: as above.
unsafe impl Sync for Descriptor {}

static PRIVATE: OnceLock<Descriptor> = OnceLock::new();

/// The SID of this process's user, as text (`S-1-5-21-…`).
fn current_user_sid() -> io::Result<String> {
    // SAFETY: plain Win32 calls with valid out pointers; the token handle
    // is owned below, the buffer outlives every use of the SID in it, and
    // the string `ConvertSidToStringSidW` allocates is freed once copied.
    unsafe {
        let mut token: HANDLE = std::ptr::null_mut();
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        let token = OwnedHandle::from_raw_handle(token as RawHandle);
        let raw = token.as_raw_handle() as HANDLE;
        let mut len = 0u32;
        GetTokenInformation(raw, TokenUser, std::ptr::null_mut(), 0, &mut len);
        if last_error() != ERROR_INSUFFICIENT_BUFFER || len == 0 {
            return Err(io::Error::last_os_error());
        }
        // u64 elements: TOKEN_USER wants pointer alignment.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        if GetTokenInformation(raw, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) == 0 {
            return Err(io::Error::last_os_error());
        }
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        let mut text: *mut u16 = std::ptr::null_mut();
        if ConvertSidToStringSidW(user.User.Sid, &mut text) == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut n = 0;
        while *text.add(n) != 0 {
            n += 1;
        }
        let sid = String::from_utf16_lossy(std::slice::from_raw_parts(text, n));
        LocalFree(text.cast());
        Ok(sid)
    }
}

/// Security attributes for a named pipe that only the current user may
/// open: a protected DACL with one entry, `GENERIC_ALL` for the user's
/// SID (SDDL `D:P(A;;GA;;;<user SID>)`), not inheritable. Named pipes
/// otherwise get a default DACL that lets Everyone read.
///
/// The descriptor is built once per process and lives as long as it, so
/// the attributes may be used at any time.
pub fn private_pipe_security() -> io::Result<SECURITY_ATTRIBUTES> {
    let descriptor = match PRIVATE.get() {
        Some(d) => d,
        None => {
            let sddl = format!("D:P(A;;GA;;;{})", current_user_sid()?);
            let sddl = wide(OsStr::new(&sddl));
            let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: a NUL-terminated string and a valid out pointer.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    sddl.as_ptr(),
                    SDDL_REVISION_1,
                    &mut sd,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            if let Err(Descriptor(spare)) = PRIVATE.set(Descriptor(sd)) {
                // Another thread built one first.
                // SAFETY: ours was allocated by LocalAlloc and is unused.
                unsafe { LocalFree(spare) };
            }
            PRIVATE
                .get()
                .ok_or_else(|| io::Error::other("no descriptor"))?
        }
    };
    Ok(SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor.0,
        bInheritHandle: FALSE,
    })
}

// ---------------------------------------------------------------------------
// Overlapped operations, completed before the call returns.

thread_local! {
    /// This thread's event for its overlapped operations: a thread runs
    /// one at a time, so one event per thread is never shared.
    static IO_EVENT: OnceCell<Option<OwnedHandle>> = const { OnceCell::new() };
}

fn new_event() -> io::Result<OwnedHandle> {
    // SAFETY: a manual-reset, unnamed event; owned below.
    let h = unsafe { CreateEventW(std::ptr::null(), TRUE, FALSE, std::ptr::null()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// Runs `f` with an event for one overlapped operation.
fn with_event<R>(f: impl FnOnce(HANDLE) -> io::Result<R>) -> io::Result<R> {
    let cached = IO_EVENT
        .try_with(|c| {
            c.get_or_init(|| new_event().ok())
                .as_ref()
                .map(|h| h.as_raw_handle() as usize)
        })
        .ok()
        .flatten();
    match cached {
        Some(event) => f(event as HANDLE),
        // The thread is ending (or had no event): one for this call.
        None => {
            let event = new_event()?;
            f(event.as_raw_handle() as HANDLE)
        }
    }
}

/// Starts an overlapped operation on `h` with `start` and waits for it to
/// complete; returns the bytes transferred. When `cancel` is set (the end
/// is being closed) the operation is cancelled instead of waited for.
///
/// # Safety
/// `h` must be open for the whole call, and `start` must pass the
/// `OVERLAPPED` it is given to one I/O call on `h` whose buffers outlive
/// this call.
unsafe fn complete(
    h: HANDLE,
    cancel: &AtomicBool,
    start: impl FnOnce(*mut OVERLAPPED) -> i32,
) -> io::Result<u32> {
    // SAFETY: the caller upholds this fn's contract (its `# Safety`
    // section), which is what each unsafe operation below relies on.
    unsafe {
        with_event(|event| {
            let mut ov: OVERLAPPED = std::mem::zeroed();
            ov.hEvent = event;
            if start(&mut ov) == 0 {
                let code = last_error();
                if code != ERROR_IO_PENDING {
                    return Err(os_error(code));
                }
            }
            // `close` sets `cancel` before it cancels what is in flight: an
            // operation started after that cancels itself here.
            if cancel.load(Ordering::SeqCst) {
                CancelIoEx(h, &ov);
            }
            let mut n = 0u32;
            // Waits on the event; `ov` stays in place until the operation is
            // over, whatever its outcome.
            if GetOverlappedResult(h, &ov, &mut n, TRUE) == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n)
        })
    }
}

// ---------------------------------------------------------------------------
// Creating and opening pipes.

/// Creates one server instance of the pipe `name` (overlapped, byte mode,
/// private to this user, local clients only).
fn create_instance(name: &[u16], first: bool, max_instances: u32) -> io::Result<OwnedHandle> {
    create_instance_with(name, first, max_instances, FILE_FLAG_OVERLAPPED)
}

/// [`create_instance`], with `flags` (`FILE_FLAG_OVERLAPPED` or 0) in the
/// open mode.
fn create_instance_with(
    name: &[u16],
    first: bool,
    max_instances: u32,
    flags: u32,
) -> io::Result<OwnedHandle> {
    let sa = private_pipe_security()?;
    let mut open_mode = PIPE_ACCESS_DUPLEX | flags;
    if first {
        open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    // SAFETY: a NUL-terminated name and valid attributes; owned below.
    let h = unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            open_mode,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            max_instances,
            PIPE_BUFFER,
            PIPE_BUFFER,
            0,
            &sa,
        )
    };
    let in_use = |why: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "the named pipe {} already exists ({why})",
                String::from_utf16_lossy(&name[..name.len().saturating_sub(1)]),
            ),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        let code = last_error();
        if first && (code == ERROR_ACCESS_DENIED || code == ERROR_PIPE_BUSY) {
            return Err(in_use(&os_error(code)));
        }
        return Err(os_error(code));
    }
    // SAFETY: a fresh handle we own.
    let h = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    // Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE and adds an instance to
    // an existing pipe: a first instance must be the only one.
    if first && instances(&h)? > 1 {
        return Err(in_use(&"another instance is open"));
    }
    Ok(h)
}

/// How many instances of the pipe `h` belongs to exist.
fn instances(h: &OwnedHandle) -> io::Result<u32> {
    let mut count = 0u32;
    // SAFETY: a plain query with one valid out pointer; the others may be null.
    let ok = unsafe {
        GetNamedPipeHandleStateW(
            h.as_raw_handle() as HANDLE,
            std::ptr::null_mut(),
            &mut count,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(count)
}

/// Opens the client end of `name` once (no waiting).
fn open_client(name: &[u16], overlapped: bool) -> io::Result<OwnedHandle> {
    let mode = if overlapped { FILE_FLAG_OVERLAPPED } else { 0 };
    // SAFETY: a NUL-terminated name; owned below. SECURITY_IDENTIFICATION:
    // the server may learn who we are but never act as us.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            mode | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// Waits for a client on the server instance `h`. A client that came and
/// went before we looked (`ERROR_NO_DATA`) is dropped and the instance
/// listens again, unless `stop` says to give up.
fn wait_for_client(h: &OwnedHandle, stop: impl Fn() -> bool) -> io::Result<()> {
    let raw = h.as_raw_handle() as HANDLE;
    let never = AtomicBool::new(false);
    loop {
        // SAFETY: `raw` is open for the call; no buffers.
        let r = unsafe { complete(raw, &never, |ov| ConnectNamedPipe(raw, ov)) };
        match r {
            Ok(_) => return Ok(()),
            Err(e) if is(&e, ERROR_PIPE_CONNECTED) => return Ok(()),
            Err(e) if is(&e, ERROR_NO_DATA) && !stop() => {
                // SAFETY: plain Win32 call on our instance.
                unsafe { DisconnectNamedPipe(raw) };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Two connected ends of a fresh, private pipe (CPython's `Pipe()` on
/// Windows): the server end and the client end, both not inheritable.
pub(in crate::sys) fn pair() -> io::Result<(PipeEnd, PipeEnd)> {
    let name = pipe_name(&unique_name());
    let server = create_instance(&name, true, 1)?;
    let client = open_client(&name, true)?;
    wait_for_client(&server, || true)?;
    Ok((PipeEnd::new(server), PipeEnd::new(client)))
}

/// The two ends of a fresh launch channel (`ChildProcess::spawn_inheriting`):
/// a one-instance private pipe whose client end this process opened
/// itself, so that no one else can hold it; both ends for synchronous
/// I/O (std's `File`), both not inheritable. The server end first.
pub(in crate::sys) fn control_pair() -> io::Result<(OwnedHandle, OwnedHandle)> {
    let name = pipe_name(&unique_name());
    let server = create_instance_with(&name, true, 1, 0)?;
    let client = open_client(&name, false)?;
    let raw = server.as_raw_handle() as HANDLE;
    // SAFETY: plain Win32 call on our instance, synchronous and already
    // connected: it returns at once.
    if unsafe { ConnectNamedPipe(raw, std::ptr::null_mut()) } == 0 {
        let code = last_error();
        if code != ERROR_PIPE_CONNECTED {
            return Err(os_error(code));
        }
    }
    let mut pid = 0u32;
    // SAFETY: a plain query on a connected pipe with one valid out pointer.
    let known = unsafe { GetNamedPipeClientProcessId(raw, &mut pid) };
    if known == 0 || pid != std::process::id() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("the launch channel's client is process {pid}, not this one"),
        ));
    }
    Ok((server, client))
}

/// Connects to the local listener `path`, waiting (up to 20 s, as
/// CPython) while every instance of it is busy.
pub(in crate::sys) fn connect(path: &Path) -> io::Result<PipeEnd> {
    open(path, true).map(PipeEnd::new)
}

/// Opens the client end of the pipe `path`, for overlapped I/O (a
/// [`PipeEnd`]) or not (plain synchronous reads and writes, as std's
/// `File` does them), waiting (up to 20 s) while every instance of it is
/// busy. The one Win32 named-pipe client of mproc.
pub(in crate::sys) fn open(path: &Path, overlapped: bool) -> io::Result<OwnedHandle> {
    let name = pipe_name(path);
    let start = Instant::now();
    loop {
        match open_client(&name, overlapped) {
            Ok(h) => return Ok(h),
            Err(e) if is(&e, ERROR_PIPE_BUSY) || is(&e, ERROR_SEM_TIMEOUT) => {
                if start.elapsed() >= BUSY_TIMEOUT {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the named pipe {} stayed busy", path.display()),
                    ));
                }
                // SAFETY: a NUL-terminated name. Returns when an instance
                // is free, after the timeout, or at once if none exists.
                unsafe { WaitNamedPipeW(name.as_ptr(), 1000) };
            }
            Err(e) if is(&e, ERROR_FILE_NOT_FOUND) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no listener at {} ({e})", path.display()),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `h` is a named pipe (either end).
pub(in crate::sys) fn is_pipe(h: HANDLE) -> bool {
    // SAFETY: plain query; every out pointer may be null.
    unsafe {
        GetNamedPipeInfo(
            h,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ) != 0
    }
}

/// Whether a read on the pipe `h` would not block: data is there, or the
/// pipe is broken (end of file) or unusable.
pub(in crate::sys) fn ready(h: HANDLE) -> bool {
    unread(h) != Some(0)
}

/// How many bytes wait unread in the pipe `h` (`None`: the pipe is broken
/// or unusable).
pub(in crate::sys) fn unread(h: HANDLE) -> Option<u32> {
    let mut avail = 0u32;
    // SAFETY: plain query with a valid out pointer.
    let ok = unsafe {
        PeekNamedPipe(
            h,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            &mut avail,
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(avail)
}

// ---------------------------------------------------------------------------
// One end.

/// One end of a named pipe, opened for overlapped I/O.
///
/// `close` cancels what other threads have in flight on this end, waits
/// until they have returned, then closes the handle, so an operation never
/// runs on a closed (and perhaps reused) handle value. A pipe has no
/// `shutdown`: the peer sees end of file only when the handle is closed,
/// so, unlike a Unix descriptor, the value is released at `close`.
#[derive(Debug)]
pub(in crate::sys) struct PipeEnd {
    /// The handle while open; `close` takes it (write lock), operations
    /// hold the read lock while they run.
    handle: RwLock<Option<OwnedHandle>>,
    closing: AtomicBool,
}

impl PipeEnd {
    pub(in crate::sys) fn new(h: OwnedHandle) -> PipeEnd {
        PipeEnd {
            handle: RwLock::new(Some(h)),
            closing: AtomicBool::new(false),
        }
    }

    /// The handle value while open.
    pub(in crate::sys) fn raw(&self) -> Option<RawHandle> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let guard = read(&self.handle);
        guard.as_ref().map(|h| h.as_raw_handle())
    }

    /// Runs `f` on the open handle, keeping `close` out meanwhile.
    fn with<R>(&self, f: impl FnOnce(HANDLE) -> io::Result<R>) -> io::Result<R> {
        let guard = read(&self.handle);
        match guard.as_ref() {
            Some(h) => f(h.as_raw_handle() as HANDLE),
            None => Err(closed()),
        }
    }

    /// Reads at most `len` bytes to `buf`; `Ok(0)` is end of file (the
    /// other end is closed everywhere).
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes.
    pub(in crate::sys) unsafe fn read_raw(&self, buf: *mut u8, len: usize) -> io::Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let len = len.min(READ_MAX) as u32;
        self.with(|h| {
            // SAFETY: `h` is open while `with` runs; the caller vouches for `buf`.
            let r = unsafe {
                complete(h, &self.closing, |ov| {
                    ReadFile(h, buf, len, std::ptr::null_mut(), ov)
                })
            };
            match r {
                Ok(n) => Ok(n as usize),
                Err(e) if is(&e, ERROR_BROKEN_PIPE) || is(&e, ERROR_PIPE_NOT_CONNECTED) => Ok(0),
                Err(e) => Err(e),
            }
        })
    }

    /// Writes all of `buf`. A closed peer is `ErrorKind::BrokenPipe`.
    pub(in crate::sys) fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.with(|h| {
            let mut rest = buf;
            while !rest.is_empty() {
                // Never a zero-length write: a byte-mode reader would see
                // it as a zero-length read, which looks like end of file.
                let take = rest.len().min(WRITE_CHUNK);
                // SAFETY: `h` is open while `with` runs; `rest` outlives the call.
                let r = unsafe {
                    complete(h, &self.closing, |ov| {
                        WriteFile(h, rest.as_ptr(), take as u32, std::ptr::null_mut(), ov)
                    })
                };
                match r {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => rest = &rest[n as usize..],
                    Err(e)
                        if is(&e, ERROR_NO_DATA)
                            || is(&e, ERROR_BROKEN_PIPE)
                            || is(&e, ERROR_PIPE_NOT_CONNECTED) =>
                    {
                        return Err(io::ErrorKind::BrokenPipe.into())
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// Whether a read would not block now.
    pub(in crate::sys) fn ready(&self) -> io::Result<bool> {
        self.with(|h| Ok(ready(h)))
    }

    /// Closes this end: operations in flight in other threads are
    /// cancelled, and the handle is closed once they have returned.
    pub(in crate::sys) fn close(&self) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let guard = read(&self.handle);
            if let Some(h) = guard.as_ref() {
                // SAFETY: cancels this process's I/O on an open handle.
                unsafe { CancelIoEx(h.as_raw_handle() as HANDLE, std::ptr::null()) };
            }
        }
        let taken = write(&self.handle).take();
        drop(taken);
    }
}

// ---------------------------------------------------------------------------
// Listening.

#[derive(Debug, Default)]
struct AcceptState {
    closed: bool,
    /// The instance the next `accept` waits on: one always exists while
    /// the listener is open, so clients find the name between accepts.
    pending: Option<OwnedHandle>,
    /// How many `accept` calls wait on an instance right now.
    accepting: usize,
}

/// A local listener: a named pipe with a fresh instance for each client.
#[derive(Debug)]
pub(in crate::sys) struct PipeAcceptor {
    name: Vec<u16>,
    state: Mutex<AcceptState>,
}

impl PipeAcceptor {
    /// Creates the pipe `path`; an error if the name is taken.
    pub(in crate::sys) fn bind(path: &Path) -> io::Result<PipeAcceptor> {
        let name = pipe_name(path);
        let first = create_instance(&name, true, PIPE_UNLIMITED_INSTANCES)?;
        Ok(PipeAcceptor {
            name,
            state: Mutex::new(AcceptState {
                pending: Some(first),
                ..AcceptState::default()
            }),
        })
    }

    fn closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Waits for one client.
    pub(in crate::sys) fn accept(&self) -> io::Result<PipeEnd> {
        let instance = {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(closed());
            }
            let instance = match state.pending.take() {
                Some(h) => h,
                None => create_instance(&self.name, false, PIPE_UNLIMITED_INSTANCES)?,
            };
            state.accepting += 1;
            instance
        };
        let connected = wait_for_client(&instance, || self.closed());
        let mut state = lock(&self.state);
        state.accepting -= 1;
        connected?;
        if state.closed {
            return Err(closed());
        }
        // The next instance before this one is handed out.
        if state.pending.is_none() {
            match create_instance(&self.name, false, PIPE_UNLIMITED_INSTANCES) {
                Ok(h) => state.pending = Some(h),
                Err(e) => tracing::warn!("cannot create the next pipe instance: {e}"),
            }
        }
        Ok(PipeEnd::new(instance))
    }

    /// Stops listening: the waiting instance is closed, and each `accept`
    /// blocked in another thread is woken by a connection of our own.
    pub(in crate::sys) fn close(&self) {
        let (pending, waiting) = {
            let mut state = lock(&self.state);
            state.closed = true;
            (state.pending.take(), state.accepting)
        };
        drop(pending);
        let mut wakers = Vec::new();
        for _ in 0..waiting.min(64) {
            match open_client(&self.name, true) {
                Ok(h) => wakers.push(h),
                Err(_) => break,
            }
        }
    }
}
