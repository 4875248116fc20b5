//! Windows: local listeners are named pipes (a new instance per client);
//! TCP ones are sockets.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::sys::stream::imp::{pipe, tcp, End};
use crate::sys::stream::Stream;

/// The textual scheme of a local address (`pipe:\\.\pipe\name`).
pub const LOCAL_SCHEME: &str = "pipe";

#[derive(Debug)]
enum Listening {
    Pipe(pipe::PipeAcceptor),
    Tcp(tcp::TcpAcceptor),
}

/// A listening endpoint: a named pipe (a new instance per client) or a
/// TCP socket.
#[derive(Debug)]
pub struct Acceptor {
    listening: Listening,
}

/// Creates the named pipe `path` (`\\.\pipe\…`; any other text names
/// `\\.\pipe\<text>`) and listens. Fails if a pipe of that name exists.
pub fn bind_local(path: &Path) -> io::Result<Acceptor> {
    Ok(Acceptor {
        listening: Listening::Pipe(pipe::PipeAcceptor::bind(path)?),
    })
}

/// Binds a TCP socket and listens; returns the bound address (the real
/// port when `addr` asked for port 0).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<(Acceptor, SocketAddr)> {
    let (acceptor, local) = tcp::TcpAcceptor::bind(addr)?;
    Ok((
        Acceptor {
            listening: Listening::Tcp(acceptor),
        },
        local,
    ))
}

impl Acceptor {
    /// Waits for one connection.
    pub fn accept(&self) -> io::Result<Stream> {
        let end = match &self.listening {
            Listening::Pipe(p) => End::Pipe(p.accept()?),
            Listening::Tcp(t) => End::Tcp(t.accept()?),
        };
        Ok(Stream { end })
    }

    /// Stops listening: a blocked `accept` in another thread returns an
    /// error (woken by a connection of our own), later ones fail.
    pub fn close_in_place(&self) -> io::Result<()> {
        match &self.listening {
            Listening::Pipe(p) => p.close(),
            Listening::Tcp(t) => t.close(),
        }
        Ok(())
    }
}

/// Connects to the local listener `path`, waiting while all its pipe
/// instances are busy (at most 20 s, as CPython).
pub fn connect_local(path: &Path) -> io::Result<Stream> {
    Ok(Stream {
        end: End::Pipe(pipe::connect(path)?),
    })
}

/// Connects to a TCP address (Nagle off: every frame goes out at once).
pub fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
    Ok(Stream {
        end: End::Tcp(tcp::connect(addr)?),
    })
}

/// Nothing to remove: a pipe name vanishes with its last handle.
pub fn remove_local(_path: &Path) {}

/// A fresh, unused local address: `\\.\pipe\mproc-<pid>-<n>-<random>`.
pub fn unique_local_name() -> PathBuf {
    pipe::unique_name()
}
