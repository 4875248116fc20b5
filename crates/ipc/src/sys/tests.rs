//! The conformance suite of the OS layer: the contract every backend
//! keeps (see each feature's `mod.rs`), checked with real OS objects
//! against whichever backend this is built for — natively on Linux, and
//! under Wine for Windows (`cargo xtask windows -- sys::tests`). As
//! ipc-channel's `platform/test.rs`, it names no platform: a test that
//! passes here passes on every backend.
//!
//! Process tests run this very test binary as the child, with libtest
//! told to run only [`helper_child`] and `MPROC_SYS_TEST_CHILD` saying
//! what it does.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::handles::Peer;
use super::process::{imp, ChildProcess};
use super::stream::advance_parts;
use super::{
    bind_local, bind_tcp, borrow, connect_control, connect_local, connect_tcp, duplicate,
    poll_readable, recv_handles, send_handles, stream_pair, unique_local_name, AcceptFailure,
    ControlListener, Mapping, Stream,
};
use super::{handle_value, import_handle, Access};

/// Generous bound on a wait that must end (a broken backend fails the
/// test instead of hanging it).
const LONG: Duration = Duration::from_secs(60);

const CHILD_ENV: &str = "MPROC_SYS_TEST_CHILD";

/// Writes `payload` as one frame (4-byte big-endian length, then the
/// bytes). Shared with the backends' own tests.
pub(super) fn frame(s: &Stream, payload: &[u8]) {
    s.write_frame(&(payload.len() as u32).to_be_bytes(), payload)
        .unwrap();
}

/// Reads exactly `n` bytes (an early end of file fails the test).
pub(super) fn read_exactly(s: &Stream, n: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let want = n - got.len();
        assert!(s.read_to_spare(&mut got, want).unwrap() > 0, "early EOF");
    }
    got
}

fn read_to_eof(s: &Stream) -> Vec<u8> {
    let mut got = Vec::new();
    while s.read_to_spare(&mut got, 1 << 16).unwrap() > 0 {}
    got
}

// ---------------------------------------------------------------------
// Streams

/// `Pipe()`'s ends carry frames both ways, byte for byte, and the peer's
/// drop is end of file after the data still queued (CPython's
/// `_test_multiprocessing` `test_pipe`/EOF cases).
#[test]
fn stream_round_trip_then_end_of_file() {
    let (a, b) = stream_pair().unwrap();
    frame(&a, b"ping");
    assert_eq!(read_exactly(&b, 8), b"\x00\x00\x00\x04ping");
    frame(&b, b"pong");
    frame(&b, b"");
    assert_eq!(
        read_exactly(&a, 12),
        b"\x00\x00\x00\x04pong\x00\x00\x00\x00"
    );
    frame(&a, b"last");
    drop(a);
    assert_eq!(read_to_eof(&b), b"\x00\x00\x00\x04last");
    assert_eq!(b.read(&mut [0u8; 4]).unwrap(), 0, "EOF stays EOF");
    let e = b.write_frame(&[0, 0, 0, 1], b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
}

/// A frame far bigger than any OS buffer goes out whole, header first,
/// while the reader drains it: the gathered write's progress over its
/// parts is kept right across partial writes.
#[test]
fn gathered_write_of_a_big_frame_arrives_whole() {
    let (a, b) = stream_pair().unwrap();
    let big: Vec<u8> = (0..3_000_017u32).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        s.spawn(|| frame(&a, &big));
        let got = read_exactly(&b, 4 + big.len());
        assert_eq!(got[..4], (big.len() as u32).to_be_bytes());
        assert!(got[4..] == big[..], "payload changed on the way");
    });
}

/// The shared progress rule of gathered writes, on its edges: empty
/// parts, a write ending exactly on a boundary, one spanning several.
#[test]
fn gathered_write_progress_over_parts() {
    let parts: [&[u8]; 4] = [b"abc", b"", b"de", b"fghi"];
    let (mut index, mut offset) = (0, 0);
    advance_parts(&parts, &mut index, &mut offset, 2);
    assert_eq!((index, offset), (0, 2));
    advance_parts(&parts, &mut index, &mut offset, 1);
    assert_eq!(
        (index, offset),
        (2, 0),
        "a boundary moves past empty parts to the next byte to write"
    );
    advance_parts(&parts, &mut index, &mut offset, 3);
    assert_eq!((index, offset), (3, 1), "`de` is done, `f` too");
    advance_parts(&parts, &mut index, &mut offset, 3);
    assert_eq!((index, offset), (4, 0), "all written");
}

/// One thread may read while another writes on the same end.
#[test]
fn one_end_reads_while_it_writes() {
    let (a, b) = stream_pair().unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(|| read_exactly(&a, 5));
        s.spawn(|| frame(&a, &vec![7u8; 1 << 20]));
        assert_eq!(read_exactly(&b, 4 + (1 << 20)).len(), 4 + (1 << 20));
        frame(&b, b"k");
        assert_eq!(reader.join().unwrap(), b"\x00\x00\x00\x01k");
    });
}

/// Closing in place ends the peer and fails later I/O on this end.
#[test]
fn close_in_place_ends_the_peer() {
    let (a, b) = stream_pair().unwrap();
    a.close_in_place().unwrap();
    assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
    assert!(a.write_frame(&[0, 0, 0, 0], b"").is_err());
}

// ---------------------------------------------------------------------
// Handles

/// A handle sent to a process (here this one) names the same object: a
/// pipe end passed over another pipe still talks to its peer, and so
/// does a duplicate after the original is gone (CPython's
/// `test_fd_transfer`).
#[test]
fn passed_and_duplicated_handles_name_the_same_object() {
    let (ctl_a, ctl_b) = stream_pair().unwrap();
    let (x, y) = stream_pair().unwrap();
    let (z, w) = stream_pair().unwrap();
    send_handles(ctl_a.handle(), &[x.handle(), z.handle()], Peer::current()).unwrap();
    let mut got = recv_handles(ctl_b.handle(), 2).unwrap();
    assert_eq!(got.len(), 2);
    let z2 = Stream::from_owned(got.pop().unwrap()).unwrap();
    let x2 = Stream::from_owned(got.pop().unwrap()).unwrap();
    drop((x, z));
    frame(&x2, b"via x");
    assert_eq!(read_exactly(&y, 9), b"\x00\x00\x00\x05via x");
    frame(&z2, b"via z");
    assert_eq!(read_exactly(&w, 9), b"\x00\x00\x00\x05via z");

    let dup = Stream::from_owned(duplicate(x2.handle()).unwrap()).unwrap();
    drop(x2);
    frame(&dup, b"dup");
    assert_eq!(read_exactly(&y, 7), b"\x00\x00\x00\x03dup");
    drop(dup);
    assert_eq!(y.read(&mut [0u8; 1]).unwrap(), 0, "last handle gone: EOF");
}

/// A receiver that asks for handles and gets none (the peer closed) is
/// an error, never a made-up handle.
#[test]
fn receiving_handles_from_a_closed_peer_fails() {
    let (a, b) = stream_pair().unwrap();
    drop(a);
    assert!(recv_handles(b.handle(), 1).is_err());
}

// ---------------------------------------------------------------------
// Listeners

/// A local listener accepts a client; its name is taken while it lives;
/// a closed listener refuses clients (CPython's `test_listener_client`).
#[test]
fn local_listener_accepts_and_owns_its_name() {
    let name = unique_local_name();
    assert_ne!(name, unique_local_name(), "fresh names differ");
    let l = bind_local(&name).unwrap();
    assert!(bind_local(&name).is_err(), "the name is taken");
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let conn = l.accept().unwrap();
            frame(&conn, b"hi");
        });
        let c = connect_local(&name).unwrap();
        assert_eq!(read_exactly(&c, 6), b"\x00\x00\x00\x02hi");
        server.join().unwrap();
    });
    l.close_in_place().unwrap();
    assert!(connect_local(&name).is_err(), "nobody listens any more");
    super::remove_local(&name);
}

/// TCP: port 0 binds a real port, clients connect to it.
#[test]
fn tcp_listener_binds_a_real_port() {
    let (l, addr) = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_ne!(addr.port(), 0);
    let c = connect_tcp(addr).unwrap();
    let d = l.accept().unwrap();
    frame(&c, b"tcp");
    assert_eq!(read_exactly(&d, 7), b"\x00\x00\x00\x03tcp");
    drop(c);
    assert_eq!(read_to_eof(&d), b"");
}

// ---------------------------------------------------------------------
// Readiness

/// `poll_readable` reports exactly the ready handles, in order; nothing
/// on timeout; a peer's end counts as ready; nothing is consumed
/// (CPython's `multiprocessing.connection.wait` cases).
#[test]
fn poll_reports_ready_handles_and_consumes_nothing() {
    let (a, b) = stream_pair().unwrap();
    let (c, d) = stream_pair().unwrap();
    let hs = [b.handle(), d.handle()];
    assert!(poll_readable(&hs, Some(Duration::ZERO)).unwrap().is_empty());
    let start = Instant::now();
    assert!(poll_readable(&hs, Some(Duration::from_millis(30)))
        .unwrap()
        .is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(25),
        "returned early"
    );
    frame(&c, b"x");
    assert_eq!(poll_readable(&hs, Some(LONG)).unwrap(), vec![1]);
    assert_eq!(poll_readable(&hs, Some(LONG)).unwrap(), vec![1], "kept");
    drop(a);
    assert_eq!(poll_readable(&hs, Some(LONG)).unwrap(), vec![0, 1]);
    assert!(
        b.poll_readable(Some(Duration::ZERO)).unwrap(),
        "EOF is ready"
    );
    assert_eq!(read_exactly(&d, 5), b"\x00\x00\x00\x01x");
    assert!(!d.poll_readable(Some(Duration::ZERO)).unwrap());
}

// ---------------------------------------------------------------------
// Shared memory

/// A mapping's bytes are the same through a passed handle and through a
/// name; a name cannot be created twice.
#[test]
fn shared_memory_is_shared() {
    let m = Mapping::anonymous(4096).unwrap();
    assert!(m.len() >= 4096);
    // SAFETY: the mapping is at least 4096 bytes and lives for the test.
    unsafe { m.ptr().add(100).write(42) };
    let again = Mapping::from_handle(duplicate(m.handle()).unwrap()).unwrap();
    // SAFETY: as above, for the second view of the same object.
    assert_eq!(unsafe { again.ptr().add(100).read() }, 42);

    let name = format!("mproc-systest-{}", std::process::id());
    let a = Mapping::create_named(&name, 8192).unwrap();
    assert!(Mapping::create_named(&name, 8192).is_err(), "name taken");
    // SAFETY: 8192 bytes mapped.
    unsafe { a.ptr().add(8000).write(7) };
    let b = Mapping::open_named(&name).unwrap();
    // SAFETY: the same object, at least as long.
    assert_eq!(unsafe { b.ptr().add(8000).read() }, 7);
    super::unlink_named(&name).unwrap();
}

/// A memory object imported from its holder's process with
/// `Access::Read` cannot be mapped for writing (what a shared page needs:
/// the import is of no use to write through); one imported with
/// `Access::ReadWrite` is the same object, written both ways.
#[test]
fn a_read_only_import_cannot_write() {
    let m = Mapping::anonymous(4096).unwrap();
    // SAFETY: the mapping is at least 4096 bytes and lives for the test.
    unsafe { m.ptr().add(9).write(5) };
    let (pid, value) = (std::process::id(), handle_value(m.handle()));
    let read_only = import_handle(pid, value, Access::Read).expect("a read-only import");
    let mapped = Mapping::from_handle(read_only);
    assert!(mapped.is_err(), "a read-only import was mapped for writing");
    let both = Mapping::from_handle(import_handle(pid, value, Access::ReadWrite).unwrap()).unwrap();
    // SAFETY: the same object, at least 4096 bytes, for both views.
    unsafe {
        assert_eq!(both.ptr().add(9).read(), 5);
        both.ptr().add(10).write(6);
        assert_eq!(m.ptr().add(10).read(), 6);
    }
}

// ---------------------------------------------------------------------
// Processes

/// Not a test of its own: what a child started by the tests below does,
/// per `MPROC_SYS_TEST_CHILD` (unset: nothing).
#[test]
#[ignore = "run by the conformance tests in a child process"]
fn helper_child() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    if let Some(address) = what.strip_prefix("connect:") {
        let mut s = connect_control(address).unwrap();
        s.write_all(b"hi").unwrap();
        return;
    }
    match what.as_str() {
        "exit7" => std::process::exit(7),
        // Blocks until the parent closes our stdin (or kills us).
        "block" => {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        "at_exit" => {
            extern "C" fn hook() {
                let mut out = std::io::stdout();
                let _ = out.write_all(b"\n<at-exit-ran>\n");
                let _ = out.flush();
            }
            assert!(super::at_exit(hook));
        }
        other => panic!("unknown helper {other}"),
    }
}

/// This test binary again, running only [`helper_child`] as `what`,
/// with stdin and stdout piped.
fn child(
    what: &str,
) -> (
    ChildProcess,
    std::process::ChildStdin,
    std::process::ChildStdout,
) {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sys::tests::helper_child", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, what)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = c.stdin.take().unwrap();
    let stdout = c.stdout.take().unwrap();
    let p = ChildProcess::from_os(imp::Child::adopt(c, false).unwrap());
    (p, stdin, stdout)
}

/// A child's exit code is reported as it exited, the same to every
/// caller, and its sentinel becomes ready (CPython's `test_exitcode`).
#[test]
fn child_exit_code_and_sentinel() {
    let (p, _stdin, _out) = child("exit7");
    assert!(p.pid() > 0);
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(7));
    assert_eq!(p.poll().unwrap(), Some(7), "kept once known");
    assert_eq!(p.wait(Some(Duration::ZERO)).unwrap(), Some(7));
    assert_eq!(
        poll_readable(&[p.sentinel()], Some(Duration::ZERO)).unwrap(),
        vec![0]
    );
    p.kill().unwrap();
    p.terminate().unwrap();
    assert_eq!(
        p.poll().unwrap(),
        Some(7),
        "stopping an ended child is a no-op"
    );
}

/// A running child is not reported ended; killed, it exits with -9, and
/// terminated with -15, on every backend (CPython's `test_terminate`,
/// `test_kill`).
#[test]
fn killed_and_terminated_children_report_minus_signal() {
    for (how, code) in [("kill", -9), ("terminate", -15)] {
        let (p, _stdin, _out) = child("block");
        assert_eq!(p.poll().unwrap(), None);
        assert_eq!(p.wait(Some(Duration::from_millis(20))).unwrap(), None);
        assert!(poll_readable(&[p.sentinel()], Some(Duration::ZERO))
            .unwrap()
            .is_empty());
        match how {
            "kill" => p.kill().unwrap(),
            _ => p.terminate().unwrap(),
        }
        assert_eq!(p.wait(Some(LONG)).unwrap(), Some(code), "{how}");
        p.kill().unwrap();
        assert_eq!(
            p.poll().unwrap(),
            Some(code),
            "{how}: the first stop counts"
        );
    }
}

/// A hook registered with `at_exit` runs when the child exits normally.
#[test]
fn at_exit_hook_runs_at_normal_exit() {
    let (p, stdin, mut out) = child("at_exit");
    drop(stdin);
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(0), "{text}");
    assert!(text.contains("<at-exit-ran>"), "{text}");
}

/// The control listener accepts the child it was made for: the peer is
/// checked to be that process (by the OS's own account of the peer where
/// it gives one).
#[test]
fn control_listener_accepts_its_child() {
    let l = ControlListener::bind().unwrap();
    let (p, _stdin, _out) = child(&format!("connect:{}", l.address()));
    let Ok(mut s) = l.accept(&p, Instant::now() + LONG) else {
        panic!("the child's connection was not accepted");
    };
    let mut hi = [0u8; 2];
    s.read_exact(&mut hi).unwrap();
    assert_eq!(&hi, b"hi");
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(0));
}

/// A child that connected, wrote and ended before `accept` looked is
/// still its child: accepted, and what it wrote is read (the race a
/// loaded machine gives the test above).
#[test]
fn control_listener_accepts_a_child_that_already_ended() {
    let l = ControlListener::bind().unwrap();
    let (p, _stdin, _out) = child(&format!("connect:{}", l.address()));
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(0));
    let Ok(mut s) = l.accept(&p, Instant::now() + LONG) else {
        panic!("the ended child's connection was not accepted");
    };
    let mut hi = Vec::new();
    s.read_to_end(&mut hi).unwrap();
    assert_eq!(hi, b"hi");
}

/// A connection from another process than the child (here this one,
/// which knows the address) is never handed out; the child's death ends
/// the wait (hostile-peer case of the launch).
#[test]
fn control_listener_refuses_strangers_and_sees_the_child_die() {
    let l = ControlListener::bind().unwrap();
    let (p, _stdin, _out) = child("block");
    let address = l.address();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Ours is refused: end of file (or a reset) before any byte.
            if let Ok(mut stranger) = connect_control(&address) {
                let _ = stranger.read(&mut [0u8; 1]);
            }
            p.kill().unwrap();
        });
        match l.accept(&p, Instant::now() + LONG) {
            Err(AcceptFailure::ChildExited) => {}
            Ok(_) => panic!("a stranger's connection was accepted"),
            Err(AcceptFailure::Timeout) => panic!("timed out"),
            Err(AcceptFailure::Io(e)) => panic!("{e}"),
        }
    });
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(-9));
}

/// The parent link is not ready while the parent lives.
#[test]
fn parent_link_is_quiet_while_the_parent_lives() {
    let h = super::parent_sentinel_for_child().unwrap();
    let sentinel = super::ParentSentinel::from_handle(duplicate(h).unwrap(), std::process::id());
    assert!(!sentinel.wait(Some(Duration::ZERO)).unwrap());
    assert!(!sentinel.wait(Some(Duration::from_millis(20))).unwrap());
}

/// `borrow` and `raw_of` see the handle an owner holds.
#[test]
fn borrow_names_the_owners_handle() {
    let (a, _b) = stream_pair().unwrap();
    let owned = duplicate(a.handle()).unwrap();
    let raw = super::raw_of(borrow(&owned));
    // SAFETY: `owned` stays open for the borrow.
    let again = unsafe { super::borrow_raw(raw) };
    assert_eq!(super::raw_of(again), raw);
    assert_ne!(
        raw,
        super::raw_of(a.handle()),
        "a duplicate is a new handle"
    );
}
