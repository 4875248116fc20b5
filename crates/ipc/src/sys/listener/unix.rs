//! Unix: local listeners are Unix sockets bound to a path; TCP ones are
//! TCP sockets.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::sys::stream::imp::{inert_socket, replace_in_place};
use crate::sys::stream::Stream;

/// The textual scheme of a local address (`unix:/tmp/sock`).
pub const LOCAL_SCHEME: &str = "unix";

/// A listening endpoint: a Unix socket bound to a path, or a TCP socket.
#[derive(Debug)]
pub struct Acceptor {
    fd: OwnedFd,
}

/// Binds a Unix socket at `path` and listens. Fails if `path` exists.
pub fn bind_local(path: &Path) -> io::Result<Acceptor> {
    let l = UnixListener::bind(path)?;
    Ok(Acceptor { fd: l.into() })
}

/// Binds a TCP socket and listens; returns the bound address (the real
/// port when `addr` asked for port 0).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<(Acceptor, SocketAddr)> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    Ok((Acceptor { fd: l.into() }, local))
}

impl Acceptor {
    /// Waits for one connection.
    pub fn accept(&self) -> io::Result<Stream> {
        loop {
            match rustix::net::accept_with(&self.fd, rustix::net::SocketFlags::CLOEXEC) {
                Ok(fd) => {
                    // TCP only; a Unix socket refuses the option, harmlessly.
                    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
                    return Stream::new(fd);
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stops listening: a blocked `accept` in another thread returns an
    /// error, later ones fail, and the handle value stays reserved until
    /// drop (see [`Stream::close_in_place`]).
    pub fn close_in_place(&self) -> io::Result<()> {
        // Wakes a blocked accept (Linux); a listener has one holder.
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
        replace_in_place(&self.fd, &inert_socket()?)
    }
}

/// Connects to a Unix socket at `path`.
pub fn connect_local(path: &Path) -> io::Result<Stream> {
    Stream::new(UnixStream::connect(path)?.into())
}

/// Connects to a TCP address (Nagle off: every frame goes out at once).
pub fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Stream::new(s.into())
}

/// Removes a local listener's name (the socket file) once it is closed.
pub fn remove_local(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::debug!(path = %path.display(), "cannot remove the socket file: {e}");
        }
    }
}

/// A fresh, unused local socket name: `<tmp>/mproc-<pid>-<n>-<random>.sock`
/// (CPython's `arbitrary_address('AF_UNIX')`).
pub fn unique_local_name() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 6];
    // A failure leaves zeros: the pid and counter still make it unique.
    let _ = getrandom::getrandom(&mut random);
    let random = crate::util::hex::hex(&random);
    std::env::temp_dir().join(format!(
        "mproc-{}-{}-{random}.sock",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}
