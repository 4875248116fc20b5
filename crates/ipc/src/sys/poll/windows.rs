//! Windows: waiting on pipes, sockets and waitable objects.

use std::io;
use std::os::windows::io::{AsRawHandle, RawSocket};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{FALSE, HANDLE, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows_sys::Win32::System::Threading::{
    WaitForMultipleObjects, WaitForSingleObject, INFINITE,
};

use crate::sys::handles::BorrowedHandle;
use crate::sys::stream::imp::{pipe, tcp};

/// What a handle given to [`poll_readable`] is, which decides how its
/// readiness is seen.
#[derive(Clone, Copy)]
enum Source {
    /// A named pipe: data or a broken pipe (`PeekNamedPipe`).
    Pipe(HANDLE),
    /// A socket: data, end of file or an error (`WSAPoll`).
    Socket(RawSocket),
    /// A waitable object, e.g. a process (signalled).
    Object(HANDLE),
}

impl Source {
    fn of(h: BorrowedHandle<'_>) -> Source {
        let raw = h.as_raw_handle() as HANDLE;
        if pipe::is_pipe(raw) {
            Source::Pipe(raw)
        } else if tcp::is_socket(raw as RawSocket) {
            Source::Socket(raw as RawSocket)
        } else {
            Source::Object(raw)
        }
    }

    fn ready(self) -> io::Result<bool> {
        Ok(match self {
            Source::Pipe(h) => pipe::ready(h),
            Source::Socket(s) => !tcp::poll(&[s], Some(Duration::ZERO))?.is_empty(),
            // SAFETY: a zero-time wait on an open handle.
            Source::Object(h) => unsafe { WaitForSingleObject(h, 0) == WAIT_OBJECT_0 },
        })
    }
}

/// Milliseconds for a Win32 wait of at most `left` (`None`: forever),
/// rounded up so that a wait never ends before its time.
pub(in crate::sys) fn wait_millis(left: Option<Duration>) -> u32 {
    match left {
        None => INFINITE,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(u128::from(INFINITE - 1)) as u32,
    }
}

/// Waits until one of `handles` is ready — data or end of file on a pipe
/// or socket, a signalled object such as a process that ended — and
/// returns the indices of the ready ones, empty on timeout (`None` waits
/// forever).
///
/// Waitable objects alone are waited on with `WaitForMultipleObjects`,
/// sockets alone with `WSAPoll`. Pipes are not waitable objects, so a set
/// with a pipe (or a mix) is polled with a back-off from 50 µs to 5 ms
/// (CPython issues overlapped zero-byte reads instead).
pub fn poll_readable(
    handles: &[BorrowedHandle<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let sources: Vec<Source> = handles.iter().map(|h| Source::of(*h)).collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let ready_now = || -> io::Result<Vec<usize>> {
        let mut ready = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            if s.ready()? {
                ready.push(i);
            }
        }
        Ok(ready)
    };
    if sources.is_empty() {
        if let Some(t) = timeout {
            std::thread::sleep(t);
        }
        return Ok(Vec::new());
    }
    if sources.iter().all(|s| matches!(s, Source::Socket(_))) {
        let sockets: Vec<RawSocket> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Socket(s) => Some(*s),
                _ => None,
            })
            .collect();
        return tcp::poll(&sockets, timeout);
    }
    if sources.len() <= 64 && sources.iter().all(|s| matches!(s, Source::Object(_))) {
        let objects: Vec<HANDLE> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Object(h) => Some(*h),
                _ => None,
            })
            .collect();
        loop {
            // SAFETY: an array of open handles of its length.
            let r = unsafe {
                WaitForMultipleObjects(
                    objects.len() as u32,
                    objects.as_ptr(),
                    FALSE,
                    wait_millis(left()),
                )
            };
            if r == WAIT_FAILED {
                return Err(io::Error::last_os_error());
            }
            if r != WAIT_TIMEOUT {
                return ready_now();
            }
            if left().is_some_and(|l| l.is_zero()) {
                return Ok(Vec::new());
            }
        }
    }
    let mut pause = Duration::from_micros(50);
    loop {
        let ready = ready_now()?;
        if !ready.is_empty() {
            return Ok(ready);
        }
        if let Some(l) = left() {
            if l.is_zero() {
                return Ok(Vec::new());
            }
            pause = pause.min(l);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// No named pipe is a stream [`room_now`] vouches for.
pub fn is_local_stream(_h: BorrowedHandle<'_>) -> bool {
    false
}

/// Named pipes do not say whether a write would block: never sure.
pub fn room_now(_h: BorrowedHandle<'_>, _len: usize) -> bool {
    false
}

/// Whether [`poll_readable`] waits on streams without polling. A set with a pipe is polled with a back-off (see [`poll_readable`]).
pub const WAITS_ON_STREAMS: bool = false;
