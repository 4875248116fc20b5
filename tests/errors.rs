//! A serde error's own text reaches the user (issue 13 item 4), as
//! CPython shows the pickling error's: `conn.send(sock)`, `q.put(sock)` and
//! `Process(target=f, args=(sock,)).start()` all say "cannot pickle
//! 'socket' object". postcard alone keeps only "Serde Serialization Error"
//! (and "Serde Deserialization Error" on receipt, where CPython shows the
//! unpickling error's text); these tests go through real pipes, queues,
//! child processes and pool workers.
//!
//! CPython checklist (python-semantics.md §4): item 23 (an unpicklable put
//! fails and the queue keeps working) and the `send(obj)` rule of §3 ("an
//! error is raised and nothing is written"); `_test_multiprocessing`'s
//! `test_queue_feeder_on_queue_feeder_error` and `test_unpickleable_result`
//! raise the pickling error's text the same way.

use std::error::Error as _;

use mproc::{Error, Pool, Process, PutError, Queue, SimpleQueue};
use serde::ser::{Error as _, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// CPython's text for `pickle.dumps(socket.socket())`.
const SOCKET: &str = "cannot pickle 'socket' object";

/// Stands for an OS object that cannot cross processes: serialising a
/// refusing one fails with [`SOCKET`], as pickling a socket does.
#[derive(Deserialize, Debug, PartialEq)]
struct Socket {
    refuse: bool,
    fd: u32,
}

impl Socket {
    fn refusing() -> Socket {
        Socket {
            refuse: true,
            fd: 3,
        }
    }

    fn fine(fd: u32) -> Socket {
        Socket { refuse: false, fd }
    }
}

impl Serialize for Socket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.refuse {
            return Err(S::Error::custom(SOCKET));
        }
        #[derive(Serialize)]
        struct Socket {
            refuse: bool,
            fd: u32,
        }
        Socket {
            refuse: false,
            fd: self.fd,
        }
        .serialize(s)
    }
}

/// The refusal deep inside a user's type.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Message {
    id: u32,
    peers: Vec<Option<Socket>>,
}

/// A hostile impl: it makes one element refuse, swallows that refusal,
/// and then serialises fine. Nothing of the refusal may leak into this
/// encode's result or a later one.
#[derive(Deserialize, Debug, PartialEq)]
struct SwallowsRefusal(Vec<u32>);

impl Serialize for SwallowsRefusal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        // postcard wrote nothing for the refusing element: the bytes stay
        // a valid sequence.
        let _ = seq.serialize_element(&Socket::refusing());
        for n in &self.0 {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

/// A port number whose `Deserialize` refuses values over 65535 (its
/// `Serialize` does not check: a peer may send anything).
#[derive(Serialize, Debug, PartialEq)]
struct Port(u32);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let n = u32::deserialize(d)?;
        if n > 65535 {
            return Err(D::Error::custom(format!("port {n} is out of range")));
        }
        Ok(Port(n))
    }
}

/// A sequence of unknown length: postcard itself refuses it.
#[derive(Deserialize, Debug)]
struct UnknownLength;

impl Serialize for UnknownLength {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_seq(None)?.end()
    }
}

fn assert_says_socket(e: &Error) {
    assert!(matches!(e, Error::Encode(_)), "{e:?}");
    assert_eq!(e.to_string(), format!("cannot encode message: {SOCKET}"));
    // The cause is reachable the standard way, for reporters that walk
    // the chain.
    assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some(SOCKET));
}

#[mproc::target]
fn takes_socket(s: Socket) -> u32 {
    s.fd
}

#[mproc::target]
fn uses_socket(s: Socket) {
    assert!(!s.refuse);
}

#[mproc::target]
fn put_in_child(q: Queue<Message>) -> String {
    let refused = match q.put(Message {
        id: 1,
        peers: vec![Some(Socket::refusing())],
    }) {
        Err(PutError::Encode(item, e)) => {
            assert_eq!(item.id, 1);
            e.to_string()
        }
        other => format!("unexpected: {other:?}"),
    };
    // The queue keeps working in the child too.
    q.put(Message {
        id: 2,
        peers: vec![Some(Socket::fine(4))],
    })
    .unwrap();
    refused
}

/// `conn.send(sock)` raises the pickling error; nothing is written, the
/// connection keeps working (§3 `send(obj)`).
#[mproc::test]
fn a_refusal_reaches_send() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    assert_says_socket(&a.send(&Socket::refusing()).unwrap_err());
    let nested = Message {
        id: 7,
        peers: vec![None, Some(Socket::fine(5)), Some(Socket::refusing())],
    };
    assert_says_socket(&a.send(&nested).unwrap_err());
    assert!(
        !b.poll(Some(std::time::Duration::ZERO))?,
        "nothing was written"
    );
    a.send(&Socket::fine(6))?;
    assert_eq!(b.recv::<Socket>()?, Socket::fine(6));
    Ok(())
}

/// The format's own refusal keeps postcard's text (and is the source).
#[mproc::test]
fn a_format_refusal_says_what_the_format_says() -> mproc::Result<()> {
    let (a, _b) = mproc::pipe(true)?;
    let e = a.send(&UnknownLength).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("cannot encode message: "), "{text}");
    assert!(!text.contains(SOCKET), "{text}");
    assert!(e.source().and_then(|s| s.source()).is_some(), "{e:?}");
    Ok(())
}

/// A refusal an impl swallowed leaves no trace: the value is sent, and a
/// later, different failure says its own text (the text is kept per
/// encode, not in a thread-wide slot a stale refusal could haunt).
#[mproc::test]
fn a_swallowed_refusal_does_not_leak() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    a.send(&SwallowsRefusal(vec![1, 2]))?;
    assert_eq!(b.recv::<SwallowsRefusal>()?, SwallowsRefusal(vec![1, 2]));
    let later = a.send(&UnknownLength).unwrap_err().to_string();
    assert!(!later.contains(SOCKET), "{later}");
    assert_says_socket(&a.send(&Socket::refusing()).unwrap_err());
    Ok(())
}

/// Checklist 23: the put fails with the pickling error's text, hands the
/// item back, and the queue keeps working, here and in a child.
#[mproc::test]
fn a_refusal_reaches_queue_put() -> mproc::Result<()> {
    let q = Queue::<Message>::new(0)?;
    let refusing = || Message {
        id: 9,
        peers: vec![Some(Socket::refusing())],
    };
    for put in [
        q.put(refusing()),
        q.put_nowait(refusing()),
        q.put_timeout(refusing(), std::time::Duration::from_secs(1)),
    ] {
        match put {
            Err(PutError::Encode(item, e)) => {
                assert_eq!(item, refusing());
                assert_says_socket(&e);
            }
            other => panic!("{other:?}"),
        }
    }
    // `?` keeps the text too.
    let e: Error = q.put(refusing()).unwrap_err().into();
    assert_says_socket(&e);
    let from_child = mproc::spawn(put_in_child, (q.clone(),))?.join()?;
    assert_eq!(from_child, format!("cannot encode message: {SOCKET}"));
    assert_eq!(q.get()?.id, 2);
    assert!(q.empty());

    let simple = SimpleQueue::<Socket>::new()?;
    assert_says_socket(&simple.put(Socket::refusing()).unwrap_err());
    simple.put(Socket::fine(8))?;
    assert_eq!(simple.get()?, Socket::fine(8));
    Ok(())
}

/// `Process(target=f, args=(sock,)).start()` raises the pickling error:
/// no child is started, and a good process still starts.
#[mproc::test]
fn a_refusal_reaches_process_start() -> mproc::Result<()> {
    let mut p = Process::new(uses_socket, (Socket::refusing(),));
    assert_says_socket(&p.start().unwrap_err());
    assert_eq!(p.pid(), None, "no child was started");
    assert_says_socket(&mproc::spawn(takes_socket, (Socket::refusing(),)).unwrap_err());
    assert_eq!(mproc::spawn(takes_socket, (Socket::fine(11),))?.join()?, 11);
    Ok(())
}

/// `pool.apply(f, (sock,))` raises the pickling error and the pool keeps
/// running tasks.
#[mproc::test]
fn a_refusal_reaches_pool_apply() -> mproc::Result<()> {
    let mut pool = Pool::new(1)?;
    assert_says_socket(&pool.apply(takes_socket, (Socket::refusing(),)).unwrap_err());
    let r = pool.apply_async(takes_socket, (Socket::refusing(),));
    let e = match r {
        Err(e) => e,
        Ok(r) => r.get().unwrap_err(),
    };
    assert_says_socket(&e);
    assert_eq!(pool.apply(takes_socket, (Socket::fine(13),))?, 13);
    pool.close();
    pool.join()?;
    Ok(())
}

#[mproc::target]
fn sends_ports(conn: mproc::Connection, q: Queue<Vec<Port>>) -> mproc::Result<()> {
    conn.send(&Port(70_000))?;
    q.put(vec![Port(80), Port(99_999)])?;
    Ok(())
}

/// The receiving side: a `Deserialize` impl's refusal (a message from
/// another process) is `Error::Decode` saying its text, from `recv` and
/// `Queue::get`; the channel keeps working.
#[mproc::test]
fn a_decode_refusal_reaches_recv_and_get() -> mproc::Result<()> {
    let (ours, theirs) = mproc::pipe(true)?;
    let q = Queue::<Vec<Port>>::new(0)?;
    let mut p = Process::new(sends_ports, (theirs, q.clone()));
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    let e = ours.recv::<Port>().unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot decode message: port 70000 is out of range"
    );
    let e = q.get().unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot decode message: port 99999 is out of range"
    );
    q.put(vec![Port(443)]).unwrap();
    assert_eq!(q.get()?, [Port(443)]);
    Ok(())
}

#[mproc::target]
fn bad_port() -> Port {
    Port(70_000)
}

#[mproc::target]
fn port_of(p: Port) -> u32 {
    p.0
}

/// A child's result and a pool task's answer or arguments that the
/// receiving side's `Deserialize` refuses: the refusal's text reaches the
/// caller of `join`, `apply`.
#[mproc::test]
fn a_decode_refusal_reaches_join_and_apply() -> mproc::Result<()> {
    let e = mproc::spawn(bad_port, ())?.join().unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot decode message: port 70000 is out of range"
    );
    let mut pool = Pool::new(1)?;
    let e = pool.apply(bad_port, ()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot decode message: port 70000 is out of range"
    );
    // The worker decodes the arguments: its refusal says why too.
    let e = pool.apply(port_of, (Port(99_999),)).unwrap_err();
    assert!(e.to_string().contains("port 99999 is out of range"), "{e}");
    assert_eq!(pool.apply(port_of, (Port(443),))?, 443);
    pool.close();
    pool.join()?;
    Ok(())
}
