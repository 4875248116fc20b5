//! Authentication everywhere (docs/reliability.md): a connection to a
//! child's control channel, to a queue's broker or to a `Listener` that
//! does not prove the key is refused, learns nothing, and the owner keeps
//! working.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::Duration;

#[path = "common/queue_handle.rs"]
mod queue_handle;

use mproc::{Address, Client, Connection, Error, Listener, Queue};
use queue_handle::address_and_key;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[mproc::target]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

// ---------------------------------------------------------------------
// The control channel

/// What an intruder does once connected.
#[derive(Clone, Copy, Debug)]
enum Intrusion {
    /// Connects, says nothing, waits for whatever the parent sends.
    Silent,
    /// Speaks first: a made-up digest and a made-up launch request.
    SpeaksFirst,
}

/// What an intruder saw: the messages it received and how its
/// connection ended.
type Learned = (Vec<Vec<u8>>, Error);

thread_local! {
    /// The intrusion planned for this thread's next launch.
    static PLAN: RefCell<Option<Intrusion>> = const { RefCell::new(None) };
    /// The intruder started for this thread's launch.
    static INTRUDER: RefCell<Option<JoinHandle<Learned>>> = const { RefCell::new(None) };
}

/// Control connections refused in this test binary (only the control
/// channel test provokes any).
static REFUSALS: AtomicUsize = AtomicUsize::new(0);

/// The process-wide tracing subscriber of this test binary. When a
/// launch on a thread with a planned intrusion starts listening on its
/// control channel (before the child even exists), it connects there
/// first, as an intruder; and it counts the refusals launches log. (It is
/// the global default, not a scoped one: tracing caches each call site's
/// interest process-wide, and a sibling test thread with no subscriber
/// could otherwise switch the call site off for good.)
struct Spy;

#[derive(Default)]
struct Fields {
    message: String,
    address: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "address" => self.address = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl Subscriber for Spy {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message.starts_with("refused a control connection") {
            REFUSALS.fetch_add(1, Ordering::SeqCst);
        }
        let (Some(address), "control channel listening") = (fields.address, &*fields.message)
        else {
            return;
        };
        let Some(intrusion) = PLAN.with(|p| p.borrow_mut().take()) else {
            return;
        };
        // Connected here, synchronously, before the launch goes on to
        // start the child: the intruder is first in line.
        let conn = Client::connect(&Address::Local(PathBuf::from(address)), None)
            .expect("the intruder connects to the control channel");
        let handle = std::thread::spawn(move || intrude(conn, intrusion));
        INTRUDER.with(|i| *i.borrow_mut() = Some(handle));
    }
}

fn install_spy() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| tracing::subscriber::set_global_default(Spy).expect("no other subscriber"));
}

fn intrude(conn: Connection, intrusion: Intrusion) -> Learned {
    if let Intrusion::SpeaksFirst = intrusion {
        // Writes may fail once the parent has closed: what matters is
        // what comes back.
        let _ = conn.send_bytes(b"{sha256}0123456789abcdef0123456789abcdef");
        let _ = conn.send_bytes(b"give me the launch record");
    }
    drain(&conn)
}

/// A named control channel (on an OS without inherited channels, every
/// child's; elsewhere only under the test suite's fault `named-channel`,
/// which the wrapper below sets) refuses any process but the child. (A
/// child that inherits its channel — re-exec'd or forked by the
/// forkserver — has no named one to intrude on: `tests/sys/launch_channel_unix.rs`
/// covers that path.)
#[mproc::test]
#[ignore = "run by control_channel_refuses_other_processes_before_a_byte_and_the_launch_goes_on"]
fn helper_control_channel_refuses_other_processes() -> mproc::Result<()> {
    install_spy();
    let ctx = mproc::get_context(mproc::StartMethod::Spawn)?;
    for intrusion in [Intrusion::Silent, Intrusion::SpeaksFirst] {
        let refused_before = REFUSALS.load(Ordering::SeqCst);
        PLAN.with(|p| *p.borrow_mut() = Some(intrusion));
        let child = ctx.spawn(add, (40, 2))?;
        assert_eq!(child.join()?, 42, "{intrusion:?}: the child ran as asked");
        let intruder = INTRUDER.with(|i| i.borrow_mut().take());
        let (learned, end) = intruder
            .expect("the intruder connected")
            .join()
            .expect("the intruder thread");
        assert!(
            learned.is_empty(),
            "{intrusion:?}: the intruder received {learned:?}"
        );
        assert!(
            matches!(end, Error::Eof),
            "{intrusion:?}: the intruder's connection ended with {end:?}, not a plain close"
        );
        assert_eq!(
            REFUSALS.load(Ordering::SeqCst) - refused_before,
            1,
            "{intrusion:?}: the launch refused exactly the intruder"
        );
    }
    Ok(())
}

/// Runs the helper above in a test process of its own, whose launches
/// use the named control channel (`MPROC_TEST_FAULT=named-channel`).
#[test]
fn control_channel_refuses_other_processes_before_a_byte_and_the_launch_goes_on() {
    let name = "helper_control_channel_refuses_other_processes";
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", name, "--test-threads=1"])
        .env("MPROC_TEST_FAULT", "named-channel")
        .env("MPROC_START_METHOD", "spawn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run this test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: {text}");
    assert!(text.contains("1 passed"), "{name}: {text}");
}

// ---------------------------------------------------------------------
// A queue's broker

#[mproc::target]
fn take(q: Queue<u32>, n: u32) -> Vec<u32> {
    (0..n).map(|_| q.get().expect("get")).collect()
}

/// The next message, which must come within 30 s (a broker that stopped
/// accepting would otherwise hang the test).
fn recv_soon(conn: &Connection) -> mproc::Result<Vec<u8>> {
    assert!(
        conn.poll(Some(Duration::from_secs(30)))?,
        "the broker did not answer a new connection within 30 s"
    );
    conn.recv_bytes()
}

/// Reads until the end: the messages that came, and the error that ended it.
fn drain(conn: &Connection) -> Learned {
    let mut learned = Vec::new();
    loop {
        match conn.recv_bytes() {
            Ok(m) => learned.push(m),
            Err(e) => return (learned, e),
        }
    }
}

#[mproc::test]
fn queue_broker_refuses_peers_without_the_key_and_keeps_serving() -> mproc::Result<()> {
    let q: Queue<u32> = Queue::new(0)?;
    for i in 0..10 {
        q.put(i).map_err(Error::from)?;
    }
    let (address, key, id) = address_and_key(&q);

    // The right key works: the address and key above are the real ones,
    // so the refusals below are not vacuous.
    drop(Client::connect(&address, Some(&key))?);

    // A wrong key: refused on the intruder's side too.
    match Client::connect(&address, Some(b"not the queue's key")) {
        Err(Error::Authentication(_)) => {}
        other => panic!("a wrong key gave {other:?}"),
    }

    // Connects and never answers: held open while the owner goes on.
    let silent = Client::connect(&address, None)?;

    // Skips the proof and asks for the queue straight away with a
    // well-formed HELLO naming the real queue.
    let bold = Client::connect(&address, None)?;
    let challenge = recv_soon(&bold)?;
    assert!(challenge.starts_with(b"#CHALLENGE#"), "{challenge:?}");
    let mut hello = vec![1u8];
    hello.extend_from_slice(&id.to_be_bytes());
    hello.extend_from_slice(&7u64.to_be_bytes());
    hello.push(0);
    bold.send_bytes(&hello)?;
    let (learned, end) = drain(&bold);
    assert_eq!(
        learned,
        vec![b"#FAILURE#".to_vec()],
        "all the bold peer got"
    );
    assert!(matches!(end, Error::Eof), "{end:?}");

    // Garbage in place of the answer.
    let garbage = Client::connect(&address, None)?;
    recv_soon(&garbage)?;
    garbage.send_bytes(&[0xff; 300])?;
    let (learned, end) = drain(&garbage);
    assert!(
        learned.iter().all(|m| m == b"#FAILURE#"),
        "all the garbage peer got: {learned:?}"
    );
    assert!(matches!(end, Error::Eof | Error::Io(_)), "{end:?}");

    // The owner keeps working, with the silent peer still connected: a
    // new child connects, and every item is there, in order.
    assert_eq!(q.qsize(), 10);
    let child = mproc::spawn(take, (q.clone(), 10))?;
    child.join_timeout(Duration::from_secs(60))?;
    if child.is_alive()? {
        child.kill()?;
        panic!("a child could not get its items while an unproven peer was connected");
    }
    let got = child.join()?;
    assert_eq!(got, (0..10).collect::<Vec<u32>>());
    assert!(q.empty());
    drop(silent);
    Ok(())
}

// ---------------------------------------------------------------------
// A Listener

#[mproc::target]
fn greet(address: Address, key: Vec<u8>) -> Result<(), String> {
    let conn = Client::connect(&address, Some(&key)).map_err(|e| e.to_string())?;
    conn.send(&"hello".to_string()).map_err(|e| e.to_string())
}

#[mproc::test]
fn listener_refuses_a_peer_without_the_key_and_accepts_the_next() -> mproc::Result<()> {
    let key = b"the listener's key".to_vec();
    let listener = Listener::bind(Address::unique_local(), Some(&key))?;
    let address = listener.address().clone();
    let intruder_address = address.clone();
    let intruder = std::thread::spawn(move || -> mproc::Result<Learned> {
        let conn = Client::connect(&intruder_address, None)?;
        let challenge = conn.recv_bytes()?;
        assert!(challenge.starts_with(b"#CHALLENGE#"), "{challenge:?}");
        conn.send_bytes(b"{sha256}a guess")?;
        Ok(drain(&conn))
    });
    match listener.accept() {
        Err(Error::Authentication(_)) => {}
        other => panic!("an unproven peer gave accept() {other:?}"),
    }
    let (learned, end) = intruder.join().expect("intruder thread")?;
    assert_eq!(learned, vec![b"#FAILURE#".to_vec()]);
    assert!(matches!(end, Error::Eof), "{end:?}");

    let child = mproc::spawn(greet, (address, key))?;
    let conn = listener.accept()?;
    assert_eq!(conn.recv::<String>()?, "hello");
    assert_eq!(child.join()?, Ok(()));
    Ok(())
}
