//! Windows: the control listener is a one-instance named pipe that only
//! this user may open, and only the child may connect to.

use crate::util::hex::hex;
use crate::util::lock::lock;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_NO_DATA, ERROR_PIPE_CONNECTED, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, GetNamedPipeClientProcessId,
    GetNamedPipeHandleStateW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE,
    PIPE_WAIT,
};

use crate::sys::process::ChildProcess;
use crate::sys::stream::wide;

/// Nothing to clean: named pipes vanish with their last handle.
pub fn cleanup_runtime_dir() {}

/// The child's side: opens the parent's named pipe (for synchronous I/O),
/// waiting while its one instance is busy.
pub fn connect_control(address: &str) -> io::Result<ControlStream> {
    crate::sys::stream::imp::pipe::open(Path::new(address), false).map(std::fs::File::from)
}
/// The control channel's stream: a named pipe.
pub type ControlStream = std::fs::File;

static PIPE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A one-shot named-pipe server for one child's control connection.
pub struct ControlListener {
    name: String,
    pipe: Mutex<Option<OwnedHandle>>,
}

/// Why no control connection arrived.
pub enum AcceptFailure {
    /// The child ended first.
    ChildExited,
    /// The deadline passed.
    Timeout,
    /// The OS failed.
    Io(io::Error),
}

impl ControlListener {
    /// A one-instance pipe with a fresh, unguessable name, that only
    /// this user may open.
    pub fn bind() -> io::Result<ControlListener> {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd)
            .map_err(|e| io::Error::other(format!("cannot read random bytes from the OS: {e}")))?;
        let n = PIPE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(r"\\.\pipe\mproc-{}-{}-{n}", std::process::id(), hex(&rnd));
        let w = wide(&name);
        // Only this user may open it (a DACL with the user's SID alone).
        let sa = crate::sys::stream::private_pipe_security()?;
        // SAFETY: plain Win32 call with valid attributes; the handle is
        // owned below.
        let h = unsafe {
            CreateNamedPipeW(
                w.as_ptr(),
                PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                1,
                65536,
                65536,
                0,
                &sa,
            )
        };
        if h == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle we own.
        let pipe = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
        // Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE: ours must be the
        // only instance of the name.
        let mut instances = 0u32;
        // SAFETY: a plain query with one valid out pointer.
        let ok = unsafe {
            GetNamedPipeHandleStateW(
                h,
                std::ptr::null_mut(),
                &mut instances,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if ok == 0 || instances != 1 {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("the control pipe {name} is not ours alone"),
            ));
        }
        Ok(ControlListener {
            name,
            pipe: Mutex::new(Some(pipe)),
        })
    }

    /// The address a child connects to (goes into its entry token).
    pub fn address(&self) -> String {
        self.name.clone()
    }

    /// Accepts the child's connection, racing the child's exit and the
    /// deadline. ConnectNamedPipe blocks, so it runs on a helper thread; a
    /// dummy client connection releases it when the child dies first.
    pub fn accept(
        &self,
        child: &ChildProcess,
        deadline: Instant,
    ) -> Result<ControlStream, AcceptFailure> {
        let pipe = lock(&self.pipe)
            .take()
            .ok_or_else(|| AcceptFailure::Io(io::Error::other("listener already used")))?;
        // Shared with the accept thread, which lets go of it before it
        // reports: the handle is never closed under the thread, even if
        // the thread is reported late or never (a closed handle's value
        // can name another object by then).
        let pipe = Arc::new(pipe);
        let held = pipe.clone();
        let child_pid = child.pid();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (tx, rx) = mpsc::channel::<io::Result<Connected>>();
        // The caller's scoped subscriber, if any, hears this thread too.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::Builder::new()
            .name("mproc-accept".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let raw = held.as_raw_handle() as usize;
                let r = loop {
                    // SAFETY: the pipe handle stays open while this
                    // thread holds `held`.
                    let ok = unsafe { ConnectNamedPipe(raw as HANDLE, std::ptr::null_mut()) };
                    // A client that connected before this call is
                    // connected (ERROR_PIPE_CONNECTED); one that also
                    // closed its end already (ERROR_NO_DATA) is too: what
                    // it wrote is still there to read.
                    if ok == 0 {
                        // SAFETY: reads this thread's last error.
                        let code = unsafe { GetLastError() };
                        if code != ERROR_PIPE_CONNECTED && code != ERROR_NO_DATA {
                            break Err(io::Error::from_raw_os_error(code as i32));
                        }
                    }
                    let mut client = 0u32;
                    // SAFETY: a plain query on a connected pipe with one
                    // valid out pointer.
                    let known = unsafe { GetNamedPipeClientProcessId(raw as HANDLE, &mut client) };
                    if known != 0 && client == child_pid {
                        break Ok(Connected::Child);
                    }
                    if stopped.load(Ordering::Acquire) {
                        break Ok(Connected::Released);
                    }
                    // Refused before a byte is read or written: the
                    // intruder sees only the pipe break. The instance is
                    // free again for the child.
                    tracing::warn!(
                        client,
                        "refused a control connection from a process other than the child"
                    );
                    // SAFETY: plain Win32 call on our own pipe handle.
                    unsafe { DisconnectNamedPipe(raw as HANDLE) };
                };
                drop(held);
                let _ = tx.send(r);
            })
            .map_err(AcceptFailure::Io)?;
        let failure = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(10))) {
                Ok(Ok(_)) => return stream_of(pipe),
                Ok(Err(e)) => return Err(AcceptFailure::Io(e)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(AcceptFailure::Io(io::Error::other("accept thread died")))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if matches!(child.poll(), Ok(Some(_))) {
                break AcceptFailure::ChildExited;
            }
            if Instant::now() >= deadline {
                break AcceptFailure::Timeout;
            }
        };
        // Release the blocked ConnectNamedPipe with a connection of our
        // own; the child may have connected just before (and ended since,
        // or reached the deadline): its connection then counts, and what
        // it wrote is read.
        stop.store(true, Ordering::Release);
        if let Ok(Ok(Connected::Child)) = rx.try_recv() {
            // Connected and reported meanwhile: our connection would only
            // wait for the busy instance.
            return stream_of(pipe);
        }
        let dummy = connect_control(&self.name);
        // Connected (ours, or the child's that kept ours waiting): the
        // thread's ConnectNamedPipe has returned and it reports without
        // blocking again, however long a loaded machine keeps it from
        // running. Only if ours failed may it still wait for a client.
        let reported = match dummy {
            Ok(_) => rx.recv().ok(),
            Err(_) => rx.recv_timeout(Duration::from_secs(5)).ok(),
        };
        match reported {
            Some(Ok(Connected::Child)) => stream_of(pipe),
            _ => Err(failure),
        }
    }
}

/// The accepted pipe as a stream, once the accept thread let go of it.
fn stream_of(pipe: Arc<OwnedHandle>) -> Result<ControlStream, AcceptFailure> {
    Arc::try_unwrap(pipe)
        .map(std::fs::File::from)
        .map_err(|_| AcceptFailure::Io(io::Error::other("the accept thread still holds the pipe")))
}

/// Who the accept thread saw connect.
enum Connected {
    /// The child.
    Child,
    /// Our own connection, made to release the thread.
    Released,
}

/// Whether a failed read or write on a control stream means its peer is
/// gone (the channel ended), as an end of file does: besides a reset or
/// a broken pipe, a pipe the launch guard disconnected after the child
/// ended (`ERROR_PIPE_NOT_CONNECTED`), and a pipe being closed
/// (`ERROR_NO_DATA`). std maps only `ERROR_BROKEN_PIPE` to end of file.
pub fn channel_ended(e: &io::Error) -> bool {
    use windows_sys::Win32::Foundation::{ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED};
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    ) || matches!(
        e.raw_os_error(),
        Some(c) if c == ERROR_PIPE_NOT_CONNECTED as i32 || c == ERROR_NO_DATA as i32
    )
}

/// Named pipes have no read timeouts; `LaunchDeadline` bounds the launch.
pub fn set_read_timeout(_s: &ControlStream, _t: Option<Duration>) -> io::Result<()> {
    Ok(())
}

/// Nothing on Windows either (see [`set_read_timeout`]).
pub fn set_write_timeout(_s: &ControlStream, _t: Option<Duration>) -> io::Result<()> {
    Ok(())
}

/// No runtime directory on Windows (named pipes).
pub fn prepare_runtime_dir() -> io::Result<()> {
    Ok(())
}

/// The child's side of an inherited launch channel: checks that the
/// handle `value` the token names is what the parent hands over
/// (`ChildProcess::spawn_inheriting`): not a standard handle, open, a
/// named pipe's client end, whose server is this process's parent. It
/// becomes non-inheritable before anything else can start a process, so
/// this child's own children do not get it. Must run before any other
/// thread exists (the constructor): the handle is taken over.
pub fn adopt_inherited_channel(value: u64) -> io::Result<ControlStream> {
    use windows_sys::Win32::Foundation::{
        SetHandleInformation, SetLastError, HANDLE_FLAG_INHERIT, NO_ERROR,
    };
    use windows_sys::Win32::Storage::FileSystem::{GetFileType, FILE_TYPE_PIPE, FILE_TYPE_UNKNOWN};
    use windows_sys::Win32::System::Console::{
        GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
    };
    use windows_sys::Win32::System::Pipes::{
        GetNamedPipeInfo, GetNamedPipeServerProcessId, PIPE_SERVER_END,
    };
    let refuse = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let raw = usize::try_from(value)
        .ok()
        .filter(|v| *v != 0 && *v as HANDLE != INVALID_HANDLE_VALUE)
        .ok_or_else(|| refuse(format!("handle {value} is out of range")))?;
    let h = raw as HANDLE;
    for std in [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
        // SAFETY: a plain query.
        if unsafe { GetStdHandle(std) } == h {
            return Err(refuse(format!("handle {value} is a standard handle")));
        }
    }
    // SAFETY: a query on any value is sound: one that names no open
    // handle fails (FILE_TYPE_UNKNOWN with an error; a success leaves the
    // last error as it was, hence the reset).
    let kind = unsafe {
        SetLastError(NO_ERROR);
        GetFileType(h)
    };
    if kind != FILE_TYPE_PIPE {
        // SAFETY: reads this thread's last error.
        let code = unsafe { GetLastError() };
        if kind == FILE_TYPE_UNKNOWN && code != NO_ERROR {
            return Err(refuse(format!(
                "handle {value} is not open: {}",
                io::Error::from_raw_os_error(code as i32)
            )));
        }
        return Err(refuse(format!("handle {value} is not a pipe")));
    }
    let mut flags = 0u32;
    // SAFETY: a plain query with one valid out pointer.
    let named = unsafe {
        GetNamedPipeInfo(
            h,
            &mut flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if named == 0 || flags & PIPE_SERVER_END != 0 {
        return Err(refuse(format!(
            "handle {value} is not a named pipe's client end"
        )));
    }
    let parent = parent_pid();
    let mut server = 0u32;
    // SAFETY: a plain query with one valid out pointer.
    let known = unsafe { GetNamedPipeServerProcessId(h, &mut server) };
    if known == 0 || parent.is_none() || Some(server) != parent {
        return Err(refuse(format!(
            "handle {value} is not a channel from this process's parent \
             (its server is process {server}, the parent is {})",
            parent.map_or_else(|| "unknown".to_string(), |p| p.to_string())
        )));
    }
    // SAFETY: checked above to be the channel the parent handed to this
    // process; from here on it is owned here.
    let owned = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    // SAFETY: a flag change on our own open handle.
    if unsafe { SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::fs::File::from(owned))
}

/// The id of the process that created this one (`None` if the OS does
/// not say).
fn parent_pid() -> Option<u32> {
    use windows_sys::Wdk::System::Threading::{NtQueryInformationProcess, ProcessBasicInformation};
    use windows_sys::Win32::System::Threading::GetCurrentProcess;
    /// `PROCESS_BASIC_INFORMATION` (windows-sys gates it behind a
    /// feature that brings in much more).
    #[repr(C)]
    struct BasicInformation {
        exit_status: i32,
        peb: *mut core::ffi::c_void,
        affinity: usize,
        priority: i32,
        pid: usize,
        parent: usize,
    }
    // SAFETY: zeroed plain data, an out parameter.
    let mut info: BasicInformation = unsafe { std::mem::zeroed() };
    let mut len = 0u32;
    // SAFETY: a query of this process into a buffer of the class's size.
    let status = unsafe {
        NtQueryInformationProcess(
            GetCurrentProcess(),
            ProcessBasicInformation,
            (&mut info as *mut BasicInformation).cast(),
            std::mem::size_of::<BasicInformation>() as u32,
            &mut len,
        )
    };
    if status < 0 {
        return None;
    }
    u32::try_from(info.parent).ok()
}

// ---------------------------------------------------------------------
// Remote launchers (Slurm's `srun`) are Linux/Unix only: a Windows
// cluster runs no Slurm (docs/platforms.md).

/// The error of every remote-launcher call on Windows.
pub(in crate::sys) fn no_remote() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "remote launchers (srun) are not supported on Windows",
    )
}

impl ControlListener {
    /// Not on Windows: remote launchers are Unix only.
    pub fn bind_tcp(_advertise: &str) -> io::Result<ControlListener> {
        Err(no_remote())
    }
}

/// This host's name (`COMPUTERNAME`).
pub fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}
