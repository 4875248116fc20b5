//! TCP sockets: `Listener`/`Client` connections on a TCP address.

use crate::util::lock::lock;
use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use windows_sys::Win32::Networking::WinSock::{
    getsockopt, recv, WSAGetLastError, WSAPoll, WSAStartup, POLLRDNORM, SOCKET, SOCKET_ERROR,
    SOL_SOCKET, SO_TYPE, WSADATA, WSAECONNABORTED, WSAECONNRESET, WSAEINTR, WSAPOLLFD,
};

/// The most one `recv` asks for.
const READ_MAX: usize = 1 << 30;

/// Starts Winsock in this process (reference counted; std does the same
/// before its first socket). Needed to ask a handle whether it is one.
fn ensure_winsock() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        // SAFETY: a valid out pointer; version 2.2.
        let mut data: WSADATA = unsafe { std::mem::zeroed() };
        unsafe { WSAStartup(0x0202, &mut data) };
    });
}

/// Whether `raw` is a socket.
pub(in crate::sys) fn is_socket(raw: RawSocket) -> bool {
    ensure_winsock();
    let mut kind = 0i32;
    let mut len = std::mem::size_of::<i32>() as i32;
    // SAFETY: a plain query with valid out pointers; a non-socket fails.
    unsafe {
        getsockopt(
            raw as SOCKET,
            SOL_SOCKET,
            SO_TYPE,
            (&mut kind as *mut i32).cast(),
            &mut len,
        ) == 0
    }
}

/// Milliseconds for a wait of at most `left`, rounded up so a wait never
/// ends early; `-1` is forever.
fn millis(left: Option<Duration>) -> i32 {
    match left {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        }
    }
}

/// Waits until one of `sockets` has data, end of file or an error;
/// returns the indices of the ready ones, empty on timeout.
pub(in crate::sys) fn poll(
    sockets: &[RawSocket],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut fds: Vec<WSAPOLLFD> = sockets
            .iter()
            .map(|&s| WSAPOLLFD {
                fd: s as SOCKET,
                events: POLLRDNORM,
                revents: 0,
            })
            .collect();
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // SAFETY: `fds` is a valid array of its length.
        let n = unsafe { WSAPoll(fds.as_mut_ptr(), fds.len() as u32, millis(left)) };
        if n == SOCKET_ERROR {
            // SAFETY: reads this thread's Winsock error.
            let code = unsafe { WSAGetLastError() };
            if code == WSAEINTR {
                continue;
            }
            return Err(io::Error::from_raw_os_error(code));
        }
        if n > 0 {
            return Ok(fds
                .iter()
                .enumerate()
                .filter(|(_, f)| f.revents != 0)
                .map(|(i, _)| i)
                .collect());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Vec::new());
        }
    }
}

/// One end of a TCP connection (Nagle off).
#[derive(Debug)]
pub(in crate::sys) struct TcpEnd {
    sock: TcpStream,
}

impl TcpEnd {
    pub(in crate::sys) fn new(sock: TcpStream) -> TcpEnd {
        // Every frame goes out at once.
        let _ = sock.set_nodelay(true);
        TcpEnd { sock }
    }

    pub(in crate::sys) fn raw(&self) -> RawSocket {
        self.sock.as_raw_socket()
    }

    /// Reads at most `len` bytes to `buf`; `Ok(0)` is end of file, and so
    /// is a reset connection.
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes.
    pub(in crate::sys) unsafe fn read_raw(&self, buf: *mut u8, len: usize) -> io::Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let len = len.min(READ_MAX) as i32;
        loop {
            // SAFETY: the caller vouches for `buf`.
            let n = unsafe { recv(self.raw() as SOCKET, buf, len, 0) };
            if n != SOCKET_ERROR {
                return Ok(n as usize);
            }
            // SAFETY: reads this thread's Winsock error.
            match unsafe { WSAGetLastError() } {
                WSAEINTR => continue,
                WSAECONNRESET | WSAECONNABORTED => return Ok(0),
                code => return Err(io::Error::from_raw_os_error(code)),
            }
        }
    }

    /// Writes the concatenation of `parts` completely, gathered into as
    /// few sends as the OS allows. A closed or reset peer is `BrokenPipe`.
    pub(in crate::sys) fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut index = 0; // first part not completely written
        let mut offset = 0; // bytes of `parts[index]` already written
        while index < parts.len() {
            let slices: Vec<IoSlice<'_>> = parts[index..]
                .iter()
                .enumerate()
                .map(|(i, p)| IoSlice::new(if i == 0 { &p[offset..] } else { p }))
                .collect();
            if slices.iter().all(|s| s.is_empty()) {
                return Ok(());
            }
            let written = match (&self.sock).write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Err(io::ErrorKind::BrokenPipe.into())
                }
                Err(e) => return Err(e),
            };
            crate::sys::stream::advance_parts(parts, &mut index, &mut offset, written);
        }
        Ok(())
    }

    pub(in crate::sys) fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        Ok(!poll(&[self.raw()], timeout)?.is_empty())
    }

    /// Ends the connection both ways while keeping the socket (and its
    /// handle value) until drop: the peer sees end of file.
    pub(in crate::sys) fn close(&self) -> io::Result<()> {
        match self.sock.shutdown(std::net::Shutdown::Both) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Default)]
struct AcceptState {
    /// `None` once closed; `accept` works on a clone of the `Arc`.
    listener: Option<Arc<TcpListener>>,
    accepting: usize,
}

/// A listening TCP socket.
#[derive(Debug)]
pub(in crate::sys) struct TcpAcceptor {
    state: Mutex<AcceptState>,
    local: SocketAddr,
    closed: std::sync::atomic::AtomicBool,
}

impl TcpAcceptor {
    pub(in crate::sys) fn bind(addr: SocketAddr) -> io::Result<(TcpAcceptor, SocketAddr)> {
        let l = TcpListener::bind(addr)?;
        let local = l.local_addr()?;
        let acceptor = TcpAcceptor {
            state: Mutex::new(AcceptState {
                listener: Some(Arc::new(l)),
                accepting: 0,
            }),
            local,
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((acceptor, local))
    }

    pub(in crate::sys) fn accept(&self) -> io::Result<TcpEnd> {
        let listener = {
            let mut state = lock(&self.state);
            let l = state.listener.clone().ok_or_else(closed)?;
            state.accepting += 1;
            l
        };
        let result = loop {
            match listener.accept() {
                Ok((s, _)) => break Ok(s),
                Err(e)
                    if !self.closed.load(Ordering::Acquire)
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::Interrupted
                        ) => {}
                Err(e) => break Err(e),
            }
        };
        lock(&self.state).accepting -= 1;
        let sock = result?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(TcpEnd::new(sock))
    }

    /// Stops listening; each `accept` blocked in another thread is woken
    /// by a connection of our own, and the socket closes when the last of
    /// them returns.
    pub(in crate::sys) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let (listener, waiting) = {
            let mut state = lock(&self.state);
            (state.listener.take(), state.accepting)
        };
        drop(listener);
        let to = SocketAddr::new(loopback_for(self.local.ip()), self.local.port());
        for _ in 0..waiting.min(64) {
            if TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_err() {
                break;
            }
        }
    }
}

/// The address to reach a listener bound to `ip` from this machine.
fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the listener is closed")
}

/// Connects to a TCP address (Nagle off).
pub(in crate::sys) fn connect(addr: SocketAddr) -> io::Result<TcpEnd> {
    Ok(TcpEnd::new(TcpStream::connect(addr)?))
}
