//! `Listener`, `Client` and `Address`: CPython's
//! `multiprocessing.connection.Listener` and `Client`.
//!
//! A listener waits for connections on a local socket name (a Unix socket
//! path; a named pipe on Windows) or a TCP address (CPython's `AF_INET`,
//! the way across machines). With an authkey, [`Listener::accept`] and
//! [`Client::connect`] run CPython's mutual HMAC challenge
//! ([`auth`](crate::auth)) before the connection is handed out, so a Python
//! program's `Listener`/`Client` can be the other side.

use crate::util::lock::lock;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::sys::{self, Stream};
use crate::{auth, Error, Result};

/// Where a [`Listener`] listens and a [`Client`] connects.
///
/// Textual form ([`FromStr`] and [`Display`](fmt::Display)):
///
/// | text | address |
/// |---|---|
/// | `tcp:127.0.0.1:5000`, `tcp:[::1]:5000` | `Tcp` |
/// | `tcp:localhost:5000` | `Tcp`, the first address the name resolves to |
/// | `127.0.0.1:5000` (an IP literal and a port) | `Tcp` |
/// | `unix:/tmp/app.sock` (Unix), `pipe:\\.\pipe\app` (Windows), `local:app` | `Local` |
/// | any other text, e.g. `/tmp/app.sock` | `Local` (a path) |
///
/// `Display` always writes the prefixed form (`tcp:…`, and `unix:…` on
/// Unix, `pipe:…` on Windows), which parses back to the same address.
/// On Windows a local address names a named pipe: `\\.\pipe\name`, or
/// any other text `t`, which names `\\.\pipe\t`.
///
/// ```
/// use mproc_ipc::Address;
/// let a: Address = "127.0.0.1:5000".parse()?;
/// assert_eq!(a.to_string(), "tcp:127.0.0.1:5000");
/// let l: Address = "/tmp/app.sock".parse()?;
/// assert_eq!(l, Address::Local("/tmp/app.sock".into()));
/// assert_eq!(l.to_string().parse::<Address>()?, l);
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A local socket name: a Unix socket path (CPython's `AF_UNIX`), or
    /// a named pipe on Windows (`AF_PIPE`).
    Local(PathBuf),
    /// A TCP address (CPython's `AF_INET`/`AF_INET6`).
    Tcp(SocketAddr),
}

impl Address {
    /// A fresh local address nobody uses yet (CPython's default
    /// `Listener()` address): a socket path in the temporary directory on
    /// Unix, a pipe name `\\.\pipe\mproc-…` on Windows.
    pub fn unique_local() -> Address {
        Address::Local(sys::unique_local_name())
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Local(p)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Local(p) => write!(f, "{}:{}", sys::LOCAL_SCHEME, p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        let invalid = |why: &str| Error::InvalidAddress(format!("{s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("empty address"));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            if let Ok(a) = rest.parse::<SocketAddr>() {
                return Ok(Address::Tcp(a));
            }
            let mut found = rest
                .to_socket_addrs()
                .map_err(|e| invalid(&format!("expected tcp:HOST:PORT ({e})")))?;
            return found
                .next()
                .map(Address::Tcp)
                .ok_or_else(|| invalid("the host name resolves to no address"));
        }
        let local = s
            .strip_prefix(sys::LOCAL_SCHEME)
            .and_then(|r| r.strip_prefix(':'))
            .or_else(|| s.strip_prefix("local:"));
        if let Some(path) = local {
            if path.is_empty() {
                return Err(invalid("empty local socket name"));
            }
            return Ok(Address::Local(PathBuf::from(path)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        Ok(Address::Local(PathBuf::from(s)))
    }
}

/// Waits for connections (CPython's `multiprocessing.connection.Listener`).
///
/// ```
/// use mproc_ipc::{Address, Client, Listener};
/// let listener = Listener::bind("tcp:127.0.0.1:0".parse()?, Some(b"secret"))?;
/// let address = listener.address().clone(); // the real port
/// let t = std::thread::spawn(move || -> mproc_ipc::Result<String> {
///     let conn = Client::connect(&address, Some(b"secret"))?;
///     conn.send("hi")?;
///     conn.recv::<String>()
/// });
/// let conn = listener.accept()?;
/// let hi: String = conn.recv()?;
/// conn.send(&format!("{hi} back"))?;
/// assert_eq!(t.join().unwrap()?, "hi back");
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub struct Listener {
    acceptor: Arc<sys::Acceptor>,
    address: Address,
    authkey: Option<Vec<u8>>,
    closed: AtomicBool,
    /// Connections accepted by a thread of their own, once
    /// [`accept_timeout`](Listener::accept_timeout) was first called (a
    /// blocking OS accept cannot be given a deadline on every OS).
    background: Mutex<Option<Receiver<io::Result<Stream>>>>,
}

impl Listener {
    /// Listens at `address`. A TCP port 0 picks a free port
    /// ([`address`](Self::address) tells which); a local path must not
    /// exist yet, and its socket file is removed when the listener is
    /// closed or dropped. With an `authkey`, every accepted peer must
    /// prove it (and this side proves it to the peer).
    pub fn bind(address: Address, authkey: Option<&[u8]>) -> Result<Listener> {
        let (acceptor, address) = match address {
            Address::Local(path) => (sys::bind_local(&path)?, Address::Local(path)),
            Address::Tcp(addr) => {
                let (acceptor, bound) = sys::bind_tcp(addr)?;
                (acceptor, Address::Tcp(bound))
            }
        };
        tracing::debug!(%address, auth = authkey.is_some(), "listening");
        Ok(Listener {
            acceptor: Arc::new(acceptor),
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            closed: AtomicBool::new(false),
            background: Mutex::new(None),
        })
    }

    /// The address this listener listens at (with the real port for TCP).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a peer and returns the connection to it. With an authkey,
    /// the mutual challenge runs first: a peer with another key is
    /// [`Error::Authentication`] here (and on its side), and no connection
    /// is handed out. After [`close`](Self::close):
    /// [`Error::ListenerClosed`].
    pub fn accept(&self) -> Result<Connection> {
        self.accept_pending()?.authenticate(None)
    }

    /// Takes the next connection off the backlog without authenticating
    /// it yet, so that a server can run the handshake on the
    /// connection's own thread: a peer that never answers the challenge
    /// then holds up only itself, not the accept loop.
    pub(crate) fn accept_pending(&self) -> Result<Pending> {
        if self.closed() {
            return Err(Error::ListenerClosed);
        }
        let background = lock(&self.background);
        let accepted = match background.as_ref() {
            Some(rx) => rx.recv().unwrap_or_else(|_| Err(listener_closed())),
            None => {
                drop(background);
                self.acceptor.accept()
            }
        };
        self.pending(accepted)
    }

    fn pending(&self, accepted: io::Result<Stream>) -> Result<Pending> {
        let stream = match accepted {
            Ok(s) => s,
            Err(_) if self.closed() => return Err(Error::ListenerClosed),
            Err(e) => return Err(e.into()),
        };
        Ok(Pending {
            stream,
            authkey: self.authkey.clone(),
        })
    }

    /// [`accept`](Self::accept) with a deadline for the whole call,
    /// waiting for a peer and its handshake: `Ok(None)` when no peer has
    /// connected and proved the key within `timeout`. A peer that
    /// connects and stays silent is dropped when the deadline comes, so
    /// it cannot hold up the server; a peer with a wrong key is
    /// [`Error::Authentication`], as with `accept`. (Beyond CPython,
    /// whose `accept` has no timeout.)
    ///
    /// The first call starts a thread that takes connections off the
    /// backlog one at a time (holding at most one nobody asked for yet);
    /// `accept` then takes them from it too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mproc_ipc::{Client, Listener};
    /// let listener = Listener::bind("tcp:127.0.0.1:0".parse()?, Some(b"k"))?;
    /// // Nobody there.
    /// assert!(listener.accept_timeout(Duration::from_millis(50))?.is_none());
    /// // A silent peer is skipped at the deadline.
    /// let silent = Client::connect(listener.address(), None)?;
    /// assert!(listener.accept_timeout(Duration::from_millis(100))?.is_none());
    /// // A proper client is accepted.
    /// let address = listener.address().clone();
    /// let t = std::thread::spawn(move || Client::connect(&address, Some(b"k")));
    /// let conn = listener.accept_timeout(Duration::from_secs(30))?.expect("a client");
    /// t.join().unwrap()?.send("hi")?;
    /// assert_eq!(conn.recv::<String>()?, "hi");
    /// # drop(silent);
    /// # Ok::<(), mproc_ipc::Error>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<Connection>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut background = lock(&self.background);
        if background.is_none() {
            let (tx, rx) = mpsc::sync_channel(0);
            let acceptor = self.acceptor.clone();
            std::thread::Builder::new()
                .name("mproc-listener-accept".into())
                .spawn(move || loop {
                    let accepted = acceptor.accept();
                    let failed = accepted.is_err();
                    // Nobody listens any more (the Listener is gone), or
                    // the acceptor is closed: done.
                    if tx.send(accepted).is_err() || failed {
                        return;
                    }
                })?;
            *background = Some(rx);
        }
        if self.closed() {
            return Err(Error::ListenerClosed);
        }
        let Some(rx) = background.as_ref() else {
            return Err(listener_closed().into());
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let accepted = match left {
            Some(left) => match rx.recv_timeout(left) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(listener_closed()),
            },
            None => rx.recv().unwrap_or_else(|_| Err(listener_closed())),
        };
        // The rest of the time is the handshake's: a silent peer is
        // dropped when it runs out.
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self.pending(accepted)?.authenticate(left) {
            Ok(conn) => Ok(Some(conn)),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                tracing::debug!("accept_timeout: a peer did not authenticate in time");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops listening (idempotent) and removes a local socket file. A
    /// later [`accept`](Self::accept) is [`Error::ListenerClosed`].
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.acceptor.close_in_place() {
            tracing::debug!("closing a listener: {e}");
        }
        if let Address::Local(path) = &self.address {
            sys::remove_local(path);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("closed", &self.closed())
            .finish()
    }
}

/// Connects to a [`Listener`] (CPython's `multiprocessing.connection.Client`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Client;

impl Client {
    /// Connects to `address`. With an `authkey`, answers the listener's
    /// challenge and challenges it back: a listener with another key is
    /// [`Error::Authentication`] and no connection is returned.
    pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<Connection> {
        Client::connect_by(address, authkey, None)
    }

    /// [`connect`](Self::connect) with a deadline for the handshake: a
    /// listener that accepts the connection but does not complete the
    /// challenge within `timeout` (stopped, overloaded, or not an mproc
    /// or CPython listener at all) is an [`Error::Io`] of kind
    /// [`TimedOut`](std::io::ErrorKind::TimedOut), not a wait without end.
    /// (CPython's `Client` has no timeout; its handshake waits forever.)
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use mproc_ipc::{Client, Error, Listener};
    /// // A listener that never accepts: the challenge never comes.
    /// let listener = Listener::bind("tcp:127.0.0.1:0".parse()?, Some(b"k"))?;
    /// let t = Instant::now();
    /// let e = Client::connect_timeout(listener.address(), Some(b"k"), Duration::from_millis(100))
    ///     .unwrap_err();
    /// assert!(matches!(e, Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut), "{e}");
    /// assert!(t.elapsed() < Duration::from_secs(5));
    /// # Ok::<(), mproc_ipc::Error>(())
    /// ```
    pub fn connect_timeout(
        address: &Address,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        Client::connect_by(address, authkey, Instant::now().checked_add(timeout))
    }

    /// [`connect`](Self::connect), the handshake bounded by `deadline`.
    pub(crate) fn connect_by(
        address: &Address,
        authkey: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<Connection> {
        let stream = match address {
            Address::Local(path) => sys::connect_local(path)?,
            Address::Tcp(addr) => sys::connect_tcp(*addr)?,
        };
        if let Some(key) = authkey {
            let mut bounded = Bounded {
                stream: &stream,
                deadline,
                patience: None,
            };
            auth::client_handshake(&mut bounded, key)?;
        }
        Ok(connection(stream))
    }
}

/// An accepted connection whose peer has not proved the authkey yet.
/// Nothing but the handshake is read from or written to it until
/// [`authenticate`](Pending::authenticate) succeeds.
pub(crate) struct Pending {
    stream: Stream,
    authkey: Option<Vec<u8>>,
}

impl Pending {
    /// Runs the mutual challenge (when the listener has an authkey) and
    /// hands out the connection. With a `timeout`, a peer that does not
    /// answer in time is an [`Error::Io`] of kind `TimedOut`; without one
    /// the wait is unbounded, as in CPython's `Listener.accept`.
    pub(crate) fn authenticate(self, timeout: Option<Duration>) -> Result<Connection> {
        self.authenticate_with(timeout.map(|t| Instant::now() + t), None)
    }

    /// [`authenticate`](Self::authenticate) for a server whose peers
    /// share few handshake threads: the peer has `slice` for the
    /// handshake, and each time that runs out `give_up()` says whether to
    /// drop it (others wait for this thread) or give it another `slice`
    /// (nobody does). A peer that is only slow (starved on a loaded
    /// machine, as this thread may be) is then never refused for it,
    /// while a silent one holds the thread only until someone else needs
    /// it.
    pub(crate) fn authenticate_unless(
        self,
        slice: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Connection> {
        self.authenticate_with(Instant::now().checked_add(slice), Some((slice, give_up)))
    }

    fn authenticate_with(
        self,
        deadline: Option<Instant>,
        patience: Option<(Duration, &dyn Fn() -> bool)>,
    ) -> Result<Connection> {
        if let Some(key) = &self.authkey {
            let mut bounded = Bounded {
                stream: &self.stream,
                deadline,
                patience,
            };
            auth::server_handshake(&mut bounded, key)?;
        }
        Ok(connection(self.stream))
    }
}

/// A stream whose reads fail once a deadline has passed (unless its
/// `patience` extends it).
struct Bounded<'a> {
    stream: &'a Stream,
    deadline: Option<Instant>,
    /// How much more time to give, and whether to give up instead, when
    /// the deadline passes.
    patience: Option<(Duration, &'a dyn Fn() -> bool)>,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.stream.poll_readable(Some(left))? {
                break;
            }
            match self.patience {
                Some((slice, give_up)) if !give_up() => {
                    self.deadline = Instant::now().checked_add(slice);
                }
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer did not complete the authentication handshake in time",
                    ))
                }
            }
        }
        self.stream.read(buf)
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.stream;
        s.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut s = self.stream;
        s.flush()
    }
}

fn listener_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "listener is closed")
}

fn connection(stream: Stream) -> Connection {
    Connection::new(stream, crate::connection::DUPLEX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn address_text_forms() {
        // The local scheme is `unix` on Unix, `pipe` on Windows.
        let local = |rest: &str| format!("{}:{rest}", sys::LOCAL_SCHEME);
        let cases = [
            (
                "tcp:127.0.0.1:5000".to_string(),
                "tcp:127.0.0.1:5000".to_string(),
            ),
            ("127.0.0.1:5000".into(), "tcp:127.0.0.1:5000".into()),
            ("tcp:[::1]:7".into(), "tcp:[::1]:7".into()),
            ("[::1]:7".into(), "tcp:[::1]:7".into()),
            ("/tmp/x.sock".into(), local("/tmp/x.sock")),
            (local("/tmp/x.sock"), local("/tmp/x.sock")),
            ("local:rel.sock".into(), local("rel.sock")),
            ("rel.sock".into(), local("rel.sock")),
            (r"\\.\pipe\x".into(), local(r"\\.\pipe\x")),
        ];
        for (text, shown) in cases {
            let a: Address = text.parse().unwrap();
            assert_eq!(a.to_string(), shown, "{text}");
            assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
        let unique = Address::unique_local();
        assert_eq!(unique.to_string().parse::<Address>().unwrap(), unique);
        assert!(matches!(
            "".parse::<Address>(),
            Err(Error::InvalidAddress(_))
        ));
        assert!(matches!(
            "tcp:".parse::<Address>(),
            Err(Error::InvalidAddress(_))
        ));
        assert!(matches!(
            "tcp:nonsense".parse::<Address>(),
            Err(Error::InvalidAddress(_))
        ));
        assert!(matches!(
            local("").parse::<Address>(),
            Err(Error::InvalidAddress(_))
        ));
        assert!(matches!(
            "tcp:localhost:9".parse::<Address>(),
            Ok(Address::Tcp(a)) if a.port() == 9 && a.ip().is_loopback()
        ));
    }

    fn echo_once(listener: &Listener) -> Result<()> {
        let c = listener.accept()?;
        let m = c.recv_bytes()?;
        c.send_bytes(&m)
    }

    #[test]
    fn local_round_trip_and_socket_file_removed() {
        let address = Address::unique_local();
        let Address::Local(path) = address.clone() else {
            unreachable!()
        };
        let listener = Listener::bind(address.clone(), None).unwrap();
        assert_eq!(listener.address(), &address);
        thread::scope(|s| {
            s.spawn(|| echo_once(&listener).unwrap());
            let c = Client::connect(&address, None).unwrap();
            c.send_bytes(b"ping").unwrap();
            assert_eq!(c.recv_bytes().unwrap(), b"ping");
        });
        drop(listener);
        // No socket file is left (a pipe name vanishes by itself), and
        // nobody listens there any more.
        assert!(!path.exists());
        assert!(Client::connect(&address, None).is_err());
    }

    #[test]
    fn tcp_with_keys() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(b"k")).unwrap();
        let address = listener.address().clone();
        assert!(matches!(address, Address::Tcp(a) if a.port() != 0));
        thread::scope(|s| {
            s.spawn(|| echo_once(&listener).unwrap());
            let c = Client::connect(&address, Some(b"k")).unwrap();
            c.send_bytes(b"ping").unwrap();
            assert_eq!(c.recv_bytes().unwrap(), b"ping");
        });
        thread::scope(|s| {
            let server = s.spawn(|| listener.accept());
            let client = Client::connect(&address, Some(b"other"));
            assert!(
                matches!(client, Err(Error::Authentication(_))),
                "{client:?}"
            );
            let server = server.join().unwrap();
            assert!(
                matches!(server, Err(Error::Authentication(_))),
                "{server:?}"
            );
        });
    }

    #[test]
    fn accept_after_close_and_close_wakes_accept() {
        for address in [Address::unique_local(), "127.0.0.1:0".parse().unwrap()] {
            let listener = Listener::bind(address, None).unwrap();
            thread::scope(|s| {
                // Whether the thread is already blocked in accept or not,
                // close ends it with ListenerClosed.
                let blocked = s.spawn(|| listener.accept());
                listener.close();
                assert!(matches!(
                    blocked.join().unwrap(),
                    Err(Error::ListenerClosed)
                ));
            });
            listener.close();
            let e = listener.accept().unwrap_err();
            assert!(matches!(e, Error::ListenerClosed));
            assert_eq!(e.to_string(), "listener is closed");
        }
    }

    #[test]
    fn bind_to_an_existing_path_fails() {
        let address = Address::unique_local();
        let _first = Listener::bind(address.clone(), None).unwrap();
        assert!(Listener::bind(address, None).is_err());
    }

    /// A client end of `address` (local) whose first write (its answer
    /// to the challenge) comes `late`: a holder starved that long.
    struct Late<'a> {
        stream: &'a Stream,
        late: Option<Duration>,
    }

    impl Read for Late<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.stream.read(buf)
        }
    }

    impl Write for Late<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(late) = self.late.take() {
                thread::sleep(late);
            }
            let mut s = self.stream;
            s.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            let mut s = self.stream;
            s.flush()
        }
    }

    /// A listener of `key` at a fresh local address, and a thread running
    /// one client handshake with it whose answer comes `late`.
    fn late_client(
        key: &'static [u8],
        late: Duration,
    ) -> (Listener, thread::JoinHandle<Result<()>>) {
        let l = Listener::bind(Address::unique_local(), Some(key)).unwrap();
        let Address::Local(path) = l.address().clone() else {
            unreachable!()
        };
        let t = thread::spawn(move || {
            let stream = sys::connect_local(&path)?;
            let mut late = Late {
                stream: &stream,
                late: Some(late),
            };
            auth::client_handshake(&mut late, key)
        });
        (l, t)
    }

    // A peer much slower than the handshake's slice (a holder starved on
    // a loaded machine) is authenticated while nobody else waits: each
    // time its slice runs out, the server is asked and keeps waiting.
    // (With a plain deadline of the slice, it is refused.)
    #[test]
    fn a_slow_peer_is_waited_for_while_nobody_else_waits() {
        let (l, client) = late_client(b"k", Duration::from_millis(300));
        let p = l.accept_pending().unwrap();
        p.authenticate_unless(Duration::from_millis(20), &|| false)
            .unwrap();
        client.join().unwrap().unwrap();
    }

    // A silent peer is dropped when its slice runs out while others wait.
    #[test]
    fn a_silent_peer_is_dropped_when_others_wait() {
        let l = Listener::bind(Address::unique_local(), Some(b"k")).unwrap();
        let _silent = Client::connect(l.address(), None).unwrap();
        let p = l.accept_pending().unwrap();
        match p.authenticate_unless(Duration::from_millis(20), &|| true) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
    }
}
