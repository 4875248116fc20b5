//! Pipe and Connection through the public API, with real child processes
//! and real sockets. Each test names the CPython checklist item it covers
//! (the CPython 3.11 behaviour checklist, items 27–36).

use std::time::{Duration, Instant};

use mproc::{Connection, Error, Process};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Record {
    id: u32,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct A {
    x: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct B {
    x: u32,
}

/// Echoes every message back unchanged (raw payloads, so typed messages
/// come back typed) until the peer closes.
#[mproc::target]
fn echo(conn: Connection) -> mproc::Result<()> {
    loop {
        match conn.recv_bytes() {
            Ok(m) => conn.send_bytes(&m)?,
            Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Decodes a `Record`, changes it, sends it back.
#[mproc::target]
fn bump_record(conn: Connection) -> Result<(), String> {
    let mut r: Record = conn.recv().map_err(|e| e.to_string())?;
    r.id += 1;
    r.tags.push("seen by child".into());
    conn.send(&r).map_err(|e| e.to_string())
}

/// Sends `n` messages, then returns (closing its end by exiting).
#[mproc::target]
fn send_n_then_exit(conn: Connection, n: u32) -> mproc::Result<()> {
    for i in 0..n {
        conn.send(&i)?;
    }
    Ok(())
}

/// Closes its end, then waits for the parent's go-ahead on `control`.
#[mproc::target]
fn close_then_wait(conn: Connection, control: Connection) -> mproc::Result<()> {
    conn.close();
    control.recv::<()>()
}

/// One end of a pipe whose other end is in a sibling: ping, await pong.
#[mproc::target]
fn pinger(conn: Connection) -> Result<String, String> {
    let talk = || -> mproc::Result<String> {
        conn.send(&format!("ping from {}", std::process::id()))?;
        conn.recv::<String>()
    };
    talk().map_err(|e| e.to_string())
}

#[mproc::target]
fn ponger(conn: Connection) -> Result<String, String> {
    let talk = || -> mproc::Result<String> {
        let ping: String = conn.recv()?;
        conn.send(&format!("pong for [{ping}]"))?;
        Ok(ping)
    };
    talk().map_err(|e| e.to_string())
}

/// Receives with the wrong types and reports the errors.
#[mproc::target]
fn mismatches(conn: Connection) -> Vec<String> {
    let mut out = Vec::new();
    match conn.recv::<String>() {
        Err(e @ Error::TypeMismatch { .. }) => out.push(e.to_string()),
        other => out.push(format!("unexpected: {other:?}")),
    }
    match conn.recv::<B>() {
        Err(e @ Error::TypeMismatch { .. }) => out.push(e.to_string()),
        other => out.push(format!("unexpected: {other:?}")),
    }
    match conn.recv::<u32>() {
        Ok(v) => out.push(format!("then {v}")),
        other => out.push(format!("unexpected: {other:?}")),
    }
    out
}

/// Reports the flags of the ends it got.
#[mproc::target]
fn flags(reader: Connection, writer: Connection) -> (bool, bool, bool, bool) {
    (
        reader.readable(),
        reader.writable(),
        writer.readable(),
        writer.writable(),
    )
}

#[mproc::test]
fn checklist_27_round_trip_objects_across_processes() -> mproc::Result<()> {
    let (parent, child) = mproc::pipe(true)?;
    let mut p = Process::new(echo, (child,));
    p.start()?;
    let record = Record {
        id: 7,
        name: "seven".into(),
        tags: vec!["a".into(), "b".into()],
        score: Some(0.5),
    };
    parent.send(&record)?;
    assert_eq!(parent.recv::<Record>()?, record);
    parent.send("a str")?;
    assert_eq!(parent.recv::<String>()?, "a str");
    parent.send(&(1u8, -2i64, vec![3u16], None::<String>))?;
    assert_eq!(
        parent.recv::<(u8, i64, Vec<u16>, Option<String>)>()?,
        (1, -2, vec![3], None)
    );
    parent.send(&())?;
    parent.recv::<()>()?;
    parent.close();
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));

    let (parent, child) = mproc::pipe(true)?;
    let h = mproc::spawn(bump_record, (child,))?;
    parent.send(&record)?;
    let back: Record = parent.recv()?;
    assert_eq!(back.id, 8);
    assert_eq!(back.tags.last().map(String::as_str), Some("seen by child"));
    h.join()?.map_err(Error::TargetError)?;
    Ok(())
}

#[mproc::test]
fn checklist_27_sixteen_mib_bytes_across_processes() -> mproc::Result<()> {
    let (parent, child) = mproc::pipe(true)?;
    let mut p = Process::new(echo, (child,));
    p.start()?;
    let big: Vec<u8> = (0..16usize << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::thread::scope(|s| -> mproc::Result<()> {
        // The echo sends while we still send: receive concurrently.
        let sender = s.spawn(|| parent.send_bytes(&big));
        let back = parent.recv_bytes()?;
        sender.join().expect("sender thread")?;
        assert_eq!(back.len(), big.len());
        assert!(back == big, "16 MiB came back different");
        Ok(())
    })?;
    // Typed bulk bytes with serde_bytes.
    let typed = serde_bytes::ByteBuf::from(big[..1 << 20].to_vec());
    parent.send(&typed)?;
    assert_eq!(parent.recv::<serde_bytes::ByteBuf>()?, typed);
    parent.close();
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    Ok(())
}

#[mproc::test]
fn checklist_28_one_way_pipe_direction_errors() -> mproc::Result<()> {
    let (reader, writer) = mproc::pipe(false)?;
    assert!(reader.readable() && !reader.writable());
    assert!(!writer.readable() && writer.writable());
    let e = reader.send_bytes(b"x").unwrap_err();
    assert!(matches!(e, Error::ReadOnly));
    assert_eq!(e.to_string(), "connection is read-only");
    assert!(matches!(reader.send(&1u8), Err(Error::ReadOnly)));
    let e = writer.recv_bytes().unwrap_err();
    assert!(matches!(e, Error::WriteOnly));
    assert_eq!(e.to_string(), "connection is write-only");
    assert!(matches!(writer.recv::<u8>(), Err(Error::WriteOnly)));
    assert!(matches!(
        writer.recv_bytes_into(&mut [0; 4]),
        Err(Error::WriteOnly)
    ));
    // poll counts as reading.
    assert!(matches!(
        writer.poll(Some(Duration::ZERO)),
        Err(Error::WriteOnly)
    ));
    writer.send(&5u32)?;
    assert_eq!(reader.recv::<u32>()?, 5);

    // The flags travel with the ends into a child.
    let (reader, writer) = mproc::pipe(false)?;
    let got = mproc::spawn(flags, (reader, writer))?.join()?;
    assert_eq!(got, (true, false, false, true));
    Ok(())
}

#[mproc::test]
fn checklist_29_send_bytes_slices_round_trip() -> mproc::Result<()> {
    let (parent, child) = mproc::pipe(true)?;
    let mut p = Process::new(echo, (child,));
    p.start()?;
    let data: Vec<u8> = (0u8..=255).collect();
    // CPython's send_bytes(buf, offset, size) is send_bytes(&buf[offset..offset + size]).
    for (offset, size) in [(0, 256), (0, 0), (10, 5), (255, 1), (256, 0), (100, 156)] {
        parent.send_bytes(&data[offset..offset + size])?;
        assert_eq!(parent.recv_bytes()?, &data[offset..offset + size]);
    }
    parent.send_bytes(&data[..])?;
    assert_eq!(parent.recv_bytes()?, data);
    parent.close();
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    Ok(())
}

#[mproc::test]
fn checklist_30_recv_bytes_into_short_buffer() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    a.send_bytes(b"this message is long")?;
    a.send_bytes(b"fits")?;
    let mut buf = [0u8; 8];
    match b.recv_bytes_into(&mut buf) {
        Err(Error::BufferTooShort(whole)) => assert_eq!(whole, b"this message is long"),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // The long message was consumed; the next one arrives.
    assert_eq!(b.recv_bytes_into(&mut buf)?, 4);
    assert_eq!(&buf[..4], b"fits");
    a.send_bytes(b"")?;
    assert_eq!(b.recv_bytes_into(&mut [])?, 0);
    Ok(())
}

#[mproc::test]
fn checklist_31_recv_bytes_max_bad_length_makes_unreadable() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    a.send_bytes(b"12345")?;
    assert_eq!(b.recv_bytes_max(5)?, b"12345");
    a.send_bytes(b"123456")?;
    let e = b.recv_bytes_max(5).unwrap_err();
    assert!(matches!(e, Error::BadMessageLength));
    assert_eq!(e.to_string(), "bad message length");
    // A duplex end becomes unreadable but can still send.
    assert!(!b.readable() && b.writable() && !b.closed());
    assert!(matches!(b.recv_bytes(), Err(Error::WriteOnly)));
    b.send_bytes(b"still sends")?;
    assert_eq!(a.recv_bytes()?, b"still sends");

    // A read-only end is closed.
    let (reader, writer) = mproc::pipe(false)?;
    writer.send_bytes(b"123456")?;
    assert!(matches!(
        reader.recv_bytes_max(5),
        Err(Error::BadMessageLength)
    ));
    assert!(reader.closed());
    assert!(matches!(reader.recv_bytes(), Err(Error::HandleClosed)));
    Ok(())
}

#[mproc::test]
fn checklist_32_poll_empty_message_and_no_merging() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::ZERO))?);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(!b.poll(Some(Duration::from_millis(50)))?);
    a.send_bytes(b"")?;
    assert!(b.poll(Some(Duration::ZERO))?);
    assert!(b.poll(None)?, "poll never consumes");
    assert_eq!(b.recv_bytes()?, b"");
    assert!(!b.poll(Some(Duration::ZERO))?);

    // Messages never merge (CPython's test_dont_merge).
    let (parent, child) = mproc::pipe(true)?;
    let mut p = Process::new(echo, (child,));
    p.start()?;
    for m in [&b"a"[..], b"", b"bc", b"", b"def"] {
        parent.send_bytes(m)?;
    }
    for m in [&b"a"[..], b"", b"bc", b"", b"def"] {
        assert!(parent.poll(Some(Duration::from_secs(30)))?);
        assert_eq!(parent.recv_bytes()?, m);
    }
    parent.close();
    p.join()?;
    Ok(())
}

#[mproc::test]
fn checklist_33_eof_after_queued_messages_then_broken_pipe() -> mproc::Result<()> {
    let (parent, child) = mproc::pipe(true)?;
    let mut p = Process::new(send_n_then_exit, (child, 3));
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    for i in 0..3u32 {
        assert_eq!(parent.recv::<u32>()?, i);
    }
    assert!(parent.poll(Some(Duration::ZERO))?, "EOF counts as ready");
    let e = parent.recv::<u32>().unwrap_err();
    assert!(matches!(e, Error::Eof), "{e:?}");
    assert!(matches!(parent.recv_bytes(), Err(Error::Eof)));
    // Sending to a closed peer is EPIPE, never a SIGPIPE death.
    let e = parent.send_bytes(b"anyone?").unwrap_err();
    assert!(matches!(e, Error::BrokenPipe), "{e:?}");
    assert!(matches!(parent.send(&1u8), Err(Error::BrokenPipe)));
    Ok(())
}

#[mproc::test]
fn checklist_33_partial_message_is_eof_during_message() -> mproc::Result<()> {
    use std::io::Write;
    // A raw peer announces 100 bytes, sends 3, and goes away.
    let listener = mproc::Listener::bind("tcp:127.0.0.1:0".parse()?, None)?;
    let mproc::Address::Tcp(addr) = *listener.address() else {
        panic!("not a TCP address")
    };
    let mut raw = std::net::TcpStream::connect(addr)?;
    let conn = listener.accept()?;
    raw.write_all(b"\x00\x00\x00\x02ok")?;
    raw.write_all(b"\x00\x00\x00\x64abc")?;
    drop(raw);
    assert_eq!(conn.recv_bytes()?, b"ok");
    let e = conn.recv_bytes().unwrap_err();
    assert!(matches!(e, Error::EofDuringMessage), "{e:?}");
    assert_eq!(e.to_string(), "got end of file during message");
    Ok(())
}

#[mproc::test]
fn checklist_34_closed_connection_errors() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    assert!(!a.closed());
    a.close();
    a.close(); // idempotent
    assert!(a.closed());
    let e = a.send_bytes(b"x").unwrap_err();
    assert!(matches!(e, Error::HandleClosed));
    assert_eq!(e.to_string(), "handle is closed");
    assert!(matches!(a.send(&1u8), Err(Error::HandleClosed)));
    assert!(matches!(a.recv::<u8>(), Err(Error::HandleClosed)));
    assert!(matches!(a.recv_bytes(), Err(Error::HandleClosed)));
    assert!(matches!(a.recv_bytes_max(1), Err(Error::HandleClosed)));
    assert!(matches!(
        a.recv_bytes_into(&mut [0; 1]),
        Err(Error::HandleClosed)
    ));
    assert!(matches!(
        a.poll(Some(Duration::ZERO)),
        Err(Error::HandleClosed)
    ));
    assert!(matches!(a.fileno(), Err(Error::HandleClosed)));
    assert!(matches!(
        mproc::wait(&[&a], Some(Duration::ZERO)),
        Err(Error::HandleClosed)
    ));
    // The peer sees EOF.
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    Ok(())
}

/// Item 35 through a TCP connection read with `std::net` (runs on every OS).
#[mproc::test]
fn checklist_35_send_bytes_hello_wire_bytes_tcp() -> mproc::Result<()> {
    use std::io::Read;
    let listener = mproc::Listener::bind("tcp:127.0.0.1:0".parse()?, None)?;
    let mproc::Address::Tcp(addr) = *listener.address() else {
        panic!("not a TCP address")
    };
    let mut raw = std::net::TcpStream::connect(addr)?;
    let conn = listener.accept()?;
    conn.send_bytes(b"hello")?;
    let mut wire = [0u8; 9];
    raw.read_exact(&mut wire)?;
    assert_eq!(wire, [0x00, 0x00, 0x00, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
    Ok(())
}

#[mproc::test]
fn checklist_36_wait_timeout_and_zero() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    let (c, d) = mproc::pipe(true)?;
    let t = Instant::now();
    assert_eq!(
        mproc::wait(&[&b, &d], Some(Duration::from_millis(300)))?,
        Vec::<usize>::new()
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(
        mproc::wait(&[&b, &d], Some(Duration::ZERO))?,
        Vec::<usize>::new()
    );
    assert!(t.elapsed() < Duration::from_secs(1));

    c.send(&1u8)?;
    assert_eq!(mproc::wait(&[&b, &d], None)?, vec![1]);
    a.send(&2u8)?;
    let mut ready = mproc::wait(&[&b, &d], Some(Duration::ZERO))?;
    ready.sort_unstable();
    assert_eq!(ready, vec![0, 1]);
    assert_eq!(d.recv::<u8>()?, 1);
    assert_eq!(mproc::wait(&[&b, &d], None)?, vec![0]);

    // A connection and a process sentinel together; EOF counts as ready.
    let (parent, child) = mproc::pipe(true)?;
    let mut p = Process::new(send_n_then_exit, (child, 0));
    p.start()?;
    let sentinel = p.sentinel()?;
    assert_eq!(
        mproc::wait(&[&sentinel], Some(Duration::from_secs(60)))?,
        vec![0]
    );
    let mut ready = mproc::wait(&[&parent, &sentinel], Some(Duration::ZERO))?;
    ready.sort_unstable();
    assert_eq!(ready, vec![0, 1]);
    assert!(matches!(parent.recv_bytes(), Err(Error::Eof)));
    p.join()?;
    Ok(())
}

#[mproc::test]
fn typed_mismatch_names_both_types() -> mproc::Result<()> {
    let (parent, child) = mproc::pipe(true)?;
    let h = mproc::spawn(mismatches, (child,))?;
    parent.send(&7u32)?;
    parent.send(&A { x: 1 })?;
    parent.send(&9u32)?;
    let report = h.join()?;
    assert_eq!(report.len(), 3, "{report:?}");
    assert!(
        report[0].contains("u32") && report[0].contains("String"),
        "{}",
        report[0]
    );
    assert!(
        report[1].contains("::A") && report[1].contains("::B"),
        "{}",
        report[1]
    );
    assert_eq!(report[2], "then 9", "a mismatch consumes the message");

    // In one process too, with the error's fields.
    let (a, b) = mproc::pipe(true)?;
    a.send(&1u32)?;
    match b.recv::<String>() {
        Err(Error::TypeMismatch { expected, found }) => {
            assert!(expected.contains("String"), "{expected}");
            assert_eq!(found, "u32");
        }
        other => panic!("{other:?}"),
    }
    a.send_bytes(b"raw")?;
    assert!(matches!(
        b.recv::<String>(),
        Err(Error::TypeMismatch { .. })
    ));
    a.send(&[1u8, 2][..])?;
    assert_eq!(b.recv::<Vec<u8>>()?, [1, 2]);
    Ok(())
}

#[mproc::test]
fn both_ends_of_one_pipe_in_two_children_talk_directly() -> mproc::Result<()> {
    let (left, right) = mproc::pipe(true)?;
    let ping = mproc::spawn(pinger, (left,))?;
    let pong = mproc::spawn(ponger, (right,))?;
    let ping_pid = ping.pid();
    let pinged = pong.join()?.map_err(Error::TargetError)?;
    let ponged = ping.join()?.map_err(Error::TargetError)?;
    assert_eq!(pinged, format!("ping from {ping_pid}"));
    assert_eq!(ponged, format!("pong for [{pinged}]"));
    Ok(())
}

#[mproc::test]
fn connection_passed_to_child_is_the_childs() -> mproc::Result<()> {
    let (parent, child) = mproc::pipe(true)?;
    let (control, child_control) = mproc::pipe(true)?;
    let mut p = Process::new(close_then_wait, (child, child_control));
    p.start()?;
    // The parent kept no copy of `child`: the child's close is EOF here,
    // while the child is still alive.
    assert!(matches!(parent.recv_bytes(), Err(Error::Eof)));
    assert!(p.is_alive()?);
    control.send(&())?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    Ok(())
}

#[mproc::test]
fn connection_outside_args_is_refused() -> mproc::Result<()> {
    let (a, _b) = mproc::pipe(true)?;
    let (c, _d) = mproc::pipe(true)?;
    match a.send(&c) {
        Err(Error::Encode(m)) => assert!(
            m.to_string()
                .contains("a Connection can only be sent to a child process in its args"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[mproc::test]
fn connection_is_send_sync_and_shared_by_threads() -> mproc::Result<()> {
    fn check<T: Send + Sync>() {}
    check::<Connection>();
    let (a, b) = mproc::pipe(true)?;
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let a = &a;
            s.spawn(move || {
                for i in 0..100u32 {
                    a.send(&(t, i)).expect("send");
                }
            });
        }
        let mut last = [None::<u32>; 4];
        for _ in 0..400 {
            let (t, i): (u32, u32) = b.recv().expect("recv");
            let slot = &mut last[t as usize];
            assert!(slot.map_or(i == 0, |l| i == l + 1), "per-thread FIFO");
            *slot = Some(i);
        }
    });
    Ok(())
}
