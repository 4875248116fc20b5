//! Listener, Client and Address through the public API, with real child
//! processes, real sockets, and a real Python 3 on the other side
//! (checklist item 37, and interoperability with CPython's
//! `multiprocessing.connection`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mproc::{Address, Client, Connection, Error, Listener, Process};

#[path = "common/sys/mod.rs"]
mod sys;

/// Connects with `key`, says hello, returns the reply (or the error text).
#[mproc::target]
fn client_talks(address: Address, key: Option<Vec<u8>>) -> Result<String, String> {
    let talk = || -> mproc::Result<String> {
        let conn = Client::connect(&address, key.as_deref())?;
        conn.send(&format!("hello from {}", std::process::id()))?;
        conn.recv::<String>()
    };
    talk().map_err(|e| e.to_string())
}

fn serve_one(listener: &Listener) -> mproc::Result<String> {
    let conn = listener.accept()?;
    let hello: String = conn.recv()?;
    conn.send(&format!("welcome, {hello}"))?;
    Ok(hello)
}

fn addresses() -> Vec<Address> {
    vec![
        Address::unique_local(),
        "tcp:127.0.0.1:0".parse().expect("address"),
    ]
}

#[mproc::test]
fn checklist_37_matching_keys_work_across_processes() -> mproc::Result<()> {
    for address in addresses() {
        for key in [None, Some(b"right key".to_vec())] {
            let listener = Listener::bind(address.clone(), key.as_deref())?;
            let child = mproc::spawn(client_talks, (listener.address().clone(), key.clone()))?;
            let pid = child.pid();
            let hello = serve_one(&listener)?;
            assert_eq!(hello, format!("hello from {pid}"));
            let reply = child.join()?.map_err(Error::TargetError)?;
            assert_eq!(reply, format!("welcome, hello from {pid}"));
        }
    }
    Ok(())
}

#[mproc::test]
fn checklist_37_different_keys_fail_on_both_sides() -> mproc::Result<()> {
    for address in addresses() {
        let listener = Listener::bind(address, Some(b"right key"))?;
        let child = mproc::spawn(
            client_talks,
            (listener.address().clone(), Some(b"wrong key".to_vec())),
        )?;
        let server = listener.accept().unwrap_err();
        assert!(matches!(server, Error::Authentication(_)), "{server:?}");
        assert_eq!(
            server.to_string(),
            "AuthenticationError: digest received was wrong"
        );
        let client = child.join()?.unwrap_err();
        assert_eq!(client, "AuthenticationError: digest sent was rejected");

        // Nothing was delivered, and the listener still serves good peers.
        let key = Some(b"right key".to_vec());
        let child = mproc::spawn(client_talks, (listener.address().clone(), key))?;
        serve_one(&listener)?;
        child.join()?.map_err(Error::TargetError)?;
    }
    Ok(())
}

#[mproc::test]
fn listener_address_close_and_socket_file() -> mproc::Result<()> {
    let tcp = Listener::bind("tcp:127.0.0.1:0".parse()?, None)?;
    match tcp.address() {
        Address::Tcp(a) => assert_ne!(a.port(), 0, "the real port is reported"),
        other => panic!("{other:?}"),
    }
    tcp.close();
    tcp.close();
    let e = tcp.accept().unwrap_err();
    assert!(matches!(e, Error::ListenerClosed));
    assert_eq!(e.to_string(), "listener is closed");

    let address = Address::unique_local();
    let Address::Local(path) = address.clone() else {
        panic!("not local")
    };
    let local = Listener::bind(address.clone(), None)?;
    assert_eq!(local.address(), &address);
    // A Unix socket is a file; a Windows named pipe is not one.
    if sys::LOCAL_ADDRESS_IS_A_FILE {
        assert!(path.exists());
    }
    assert!(
        Listener::bind(address.clone(), None).is_err(),
        "address in use"
    );
    drop(local);
    assert!(!path.exists(), "the socket file is removed on drop");
    assert!(Client::connect(&address, None).is_err());
    Ok(())
}

/// Echoes one message on a connection it got in its arguments.
#[mproc::target]
fn echo_one(conn: Connection) -> mproc::Result<()> {
    let m = conn.recv_bytes()?;
    conn.send_bytes(&m)
}

/// Accepted connections of both kinds travel to a child on Unix; on
/// Windows a local (named pipe) one does, and a TCP one is refused with an
/// error saying why (a socket cannot be `DuplicateHandle`d into a child).
#[mproc::test]
fn accepted_connections_in_a_childs_args() -> mproc::Result<()> {
    for address in addresses() {
        let listener = Listener::bind(address, None)?;
        let ours = Client::connect(listener.address(), None)?;
        let theirs = listener.accept()?;
        let mut p = Process::new(echo_one, (theirs,));
        let started = p.start();
        if cfg!(windows) && matches!(listener.address(), Address::Tcp(_)) {
            let e = started.expect_err("a TCP connection cannot go to a child on Windows");
            assert!(e.to_string().contains("TCP connection"), "{e}");
            continue;
        }
        started?;
        ours.send_bytes(b"through the child")?;
        assert_eq!(ours.recv_bytes()?, b"through the child");
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    Ok(())
}

#[mproc::test]
fn address_text_form() -> mproc::Result<()> {
    let a: Address = "tcp:127.0.0.1:5000".parse()?;
    assert_eq!(
        a,
        Address::Tcp("127.0.0.1:5000".parse().expect("socket address"))
    );
    assert_eq!(a.to_string(), "tcp:127.0.0.1:5000");
    assert_eq!("127.0.0.1:5000".parse::<Address>()?, a);
    let l: Address = "/tmp/app.sock".parse()?;
    assert_eq!(l, Address::Local("/tmp/app.sock".into()));
    assert_eq!(l.to_string().parse::<Address>()?, l);
    assert!(matches!(
        "".parse::<Address>(),
        Err(Error::InvalidAddress(_))
    ));
    Ok(())
}

// ---- Python interoperability ----

/// The Python side: `serve FAMILY ADDRESS KEY` runs a `Listener` (printing
/// its address), `connect FAMILY ADDRESS KEY` a `Client`. KEY `-` is no
/// authkey. An exception is printed and exits 3.
const PYTHON: &str = r#"
import sys
from multiprocessing.connection import Listener, Client
mode, family, addr, key = sys.argv[1:5]
authkey = None if key == '-' else key.encode()
def parse(a):
    if family == 'AF_INET':
        host, port = a.rsplit(':', 1)
        return (host, int(port))
    return a
try:
    if mode == 'serve':
        with Listener(parse(addr), family=family, authkey=authkey) as l:
            a = l.address
            print(f"{a[0]}:{a[1]}" if family == 'AF_INET' else a, flush=True)
            with l.accept() as c:
                m = c.recv_bytes()
                c.send_bytes(b'python got ' + m)
                big = c.recv_bytes()
                c.send_bytes(big[::-1])
    else:
        with Client(parse(addr), family=family, authkey=authkey) as c:
            c.send_bytes(b'hello from python')
            m = c.recv_bytes()
            c.send_bytes(b'python got ' + m)
            big = c.recv_bytes()
            c.send_bytes(big[::-1])
except Exception as e:
    print(type(e).__name__ + ': ' + str(e), flush=True)
    sys.exit(3)
"#;

/// The local addresses a Python peer can share with us: Unix sockets
/// (`AF_UNIX`). On Windows our local addresses are named pipes, and
/// CPython's `AF_PIPE` connections carry bare messages (the pipe keeps the
/// boundaries) rather than length-prefixed frames, so only TCP is common
/// ground there.
fn python_addresses() -> Vec<Address> {
    if cfg!(windows) {
        println!("Windows: our named pipes do not speak CPython's AF_PIPE: TCP only");
        return vec!["tcp:127.0.0.1:0".parse().expect("address")];
    }
    addresses()
}

fn python_families() -> &'static [&'static str] {
    if cfg!(windows) {
        &["AF_INET"]
    } else {
        &["AF_INET", "AF_UNIX"]
    }
}

fn python_available() -> bool {
    let found = sys::command_status(
        Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .is_ok_and(|s| s.success());
    if !found {
        println!("python3 not found: skipping the Python interoperability test");
    }
    found
}

fn python(mode: &str, family: &str, address: &str, key: Option<&[u8]>) -> Child {
    let key = key.map_or("-".to_string(), |k| String::from_utf8_lossy(k).into_owned());
    sys::spawn_command(
        Command::new("python3")
            .args(["-c", PYTHON, mode, family, address, &key])
            .stdout(Stdio::piped()),
    )
    .expect("start python3")
}

/// Waits for the Python process (killing it after a minute); returns its
/// exit code and what it printed.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            out.push_str(&line.unwrap_or_default());
            out.push('\n');
        }
    }
    (status.code(), out)
}

/// The first line the Python process printed (its listener's address).
fn first_line(child: &mut Child) -> mproc::Result<String> {
    let mut line = String::new();
    if let Some(stdout) = child.stdout.as_mut() {
        // One byte at a time: nothing after the line is taken from `finish`.
        let mut byte = [0u8; 1];
        while std::io::Read::read(stdout, &mut byte)? == 1 && byte[0] != b'\n' {
            line.push(char::from(byte[0]));
        }
    }
    Ok(line.trim().to_string())
}

fn big_message() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect()
}

fn reversed(v: &[u8]) -> Vec<u8> {
    v.iter().rev().copied().collect()
}

#[mproc::test]
fn python_client_talks_to_our_listener() -> mproc::Result<()> {
    if !python_available() {
        return Ok(());
    }
    for key in [None, Some(&b"shared secret"[..])] {
        for address in python_addresses() {
            let listener = Listener::bind(address, key)?;
            let (family, text) = match listener.address() {
                Address::Tcp(a) => ("AF_INET", a.to_string()),
                Address::Local(p) => ("AF_UNIX", p.display().to_string()),
            };
            let py = python("connect", family, &text, key);
            let talk = || -> mproc::Result<()> {
                let conn = listener.accept()?;
                assert_eq!(conn.recv_bytes()?, b"hello from python");
                conn.send_bytes(b"rust reply")?;
                assert_eq!(conn.recv_bytes()?, b"python got rust reply");
                let big = big_message();
                conn.send_bytes(&big)?;
                assert_eq!(conn.recv_bytes()?, reversed(&big));
                Ok(())
            };
            let talked = talk();
            let (code, out) = finish(py);
            talked?;
            assert_eq!(code, Some(0), "{out}");
        }
    }
    Ok(())
}

#[mproc::test]
fn our_client_talks_to_a_python_listener() -> mproc::Result<()> {
    if !python_available() {
        return Ok(());
    }
    for key in [None, Some(&b"shared secret"[..])] {
        for &family in python_families() {
            let requested = match family {
                "AF_INET" => "127.0.0.1:0".to_string(),
                _ => match Address::unique_local() {
                    Address::Local(p) => p.display().to_string(),
                    other => panic!("{other:?}"),
                },
            };
            let mut py = python("serve", family, &requested, key);
            let mut talk = || -> mproc::Result<()> {
                let address = match family {
                    "AF_INET" => format!("tcp:{}", first_line(&mut py)?).parse()?,
                    _ => Address::Local(first_line(&mut py)?.into()),
                };
                let conn = Client::connect(&address, key)?;
                conn.send_bytes(b"hello from rust")?;
                assert_eq!(conn.recv_bytes()?, b"python got hello from rust");
                let big = big_message();
                conn.send_bytes(&big)?;
                assert_eq!(conn.recv_bytes()?, reversed(&big));
                Ok(())
            };
            let talked = talk();
            let (code, out) = finish(py);
            talked?;
            assert_eq!(code, Some(0), "{out}");
        }
    }
    Ok(())
}

#[mproc::test]
fn python_with_a_different_key_fails_on_both_sides() -> mproc::Result<()> {
    if !python_available() {
        return Ok(());
    }
    // A Python client with the wrong key.
    let listener = Listener::bind("tcp:127.0.0.1:0".parse()?, Some(b"right"))?;
    let Address::Tcp(a) = *listener.address() else {
        panic!("not TCP")
    };
    let py = python("connect", "AF_INET", &a.to_string(), Some(b"wrong"));
    let e = listener.accept().unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e:?}");
    let (code, out) = finish(py);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("AuthenticationError"), "{out}");

    // Our client with the wrong key against a Python listener.
    let mut py = python("serve", "AF_INET", "127.0.0.1:0", Some(b"right"));
    let connected = first_line(&mut py).and_then(|line| {
        let address: Address = format!("tcp:{line}").parse()?;
        Client::connect(&address, Some(b"wrong"))
    });
    let (code, out) = finish(py);
    let e = connected.unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e:?}");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("AuthenticationError"), "{out}");
    Ok(())
}

// ---------------------------------------------------------------------
// Deadlines are the caller's (issue 12, item 4): beyond CPython, whose
// `accept()` and `Client()` wait without end for a silent peer.

/// Generous on a loaded 2-core machine, far below "never".
const BOUND: Duration = Duration::from_secs(3);

/// `accept_timeout` returns `None` when nobody comes (not before the
/// timeout), drops a peer that connects and never answers the challenge
/// when the deadline comes, then accepts a proper client in a child; a
/// plain `accept` works after it. On every address kind.
#[mproc::test]
fn accept_timeout_skips_a_silent_peer_and_accepts_the_next() -> mproc::Result<()> {
    let key = b"accept with a deadline".to_vec();
    for address in addresses() {
        let listener = Listener::bind(address, Some(&key))?;
        let address = listener.address().clone();

        let t = Instant::now();
        assert!(listener
            .accept_timeout(Duration::from_millis(200))?
            .is_none());
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(200), "early: {took:?}");
        assert!(took < BOUND, "late: {took:?}");

        let silent = Client::connect(&address, None)?;
        let t = Instant::now();
        assert!(listener
            .accept_timeout(Duration::from_millis(300))?
            .is_none());
        assert!(
            t.elapsed() < BOUND,
            "held up by a silent peer: {:?}",
            t.elapsed()
        );

        let child = mproc::spawn(client_talks, (address.clone(), Some(key.clone())))?;
        let conn = listener
            .accept_timeout(Duration::from_secs(30))?
            .expect("the child within 30 s");
        let hello: String = conn.recv()?;
        conn.send(&format!("welcome, {hello}"))?;
        assert!(child.join()?.is_ok());

        let child = mproc::spawn(client_talks, (address.clone(), Some(key.clone())))?;
        serve_one(&listener)?;
        assert!(child.join()?.is_ok());

        // A wrong key is an error, as with accept().
        let t = std::thread::spawn({
            let address = address.clone();
            move || Client::connect(&address, Some(b"wrong"))
        });
        assert!(matches!(
            listener.accept_timeout(Duration::from_secs(30)),
            Err(Error::Authentication(_))
        ));
        assert!(t.join().expect("client thread").is_err());

        listener.close();
        assert!(matches!(
            listener.accept_timeout(Duration::from_millis(10)),
            Err(Error::ListenerClosed)
        ));
        drop(silent);
    }
    Ok(())
}

/// `Client::connect_timeout` to a listener that never runs its side of
/// the handshake (nobody calls `accept`) is a `TimedOut` error within the
/// bound, not a wait without end.
#[mproc::test]
fn connect_timeout_gives_up_on_a_listener_that_never_answers() -> mproc::Result<()> {
    for address in addresses() {
        let listener = Listener::bind(address, Some(b"k"))?;
        let t = Instant::now();
        let r = Client::connect_timeout(listener.address(), Some(b"k"), Duration::from_millis(300));
        let took = t.elapsed();
        match r {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("{other:?}"),
        }
        assert!(took >= Duration::from_millis(300), "early: {took:?}");
        assert!(took < BOUND, "late: {took:?}");
    }
    Ok(())
}
