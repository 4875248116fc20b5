//! A `pipe()` end is a byte stream (CPython's `Pipe()`, issue 12 item 12):
//! what the end keeps when it reads ahead, and what a killed writer leaves
//! behind, with real child processes. The Python side of the same issue
//! (a `python3` child reading and writing an inherited end with
//! `multiprocessing.connection.Connection(fd)`) is in
//! `crates/ipc/tests/wire_python.rs`.

use std::time::Duration;

use mproc::{Connection, Error, Process};

/// Sends one frame far bigger than any socket buffer: the send blocks
/// until the parent reads, or until the child is killed mid-frame.
#[mproc::target]
fn send_huge(conn: Connection) -> mproc::Result<()> {
    conn.send_bytes(&vec![0x42u8; 64 << 20])
}

/// Receives `n` messages and returns them.
#[mproc::target]
fn receive_n(conn: Connection, n: u32) -> Result<Vec<Vec<u8>>, String> {
    (0..n)
        .map(|_| conn.recv_bytes().map_err(|e| e.to_string()))
        .collect()
}

/// CPython's `_TestConnection` partial-message case with a real writer:
/// a writer killed in the middle of a frame leaves the reader
/// `EofDuringMessage` (its end was the only one: nothing can follow and
/// be read as the frame's rest), then `Eof` — never a torn frame, never
/// one merged with a later message.
#[mproc::test]
fn a_writer_killed_mid_frame_is_eof_during_message_never_a_merged_frame() -> mproc::Result<()> {
    let (ours, theirs) = mproc::pipe(true)?;
    let mut p = Process::new(send_huge, (theirs,));
    p.start()?;
    // The frame has begun to arrive (its header at least); the child is
    // blocked in the rest of its send.
    assert!(ours.poll(Some(Duration::from_secs(60)))?);
    p.kill()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(-9));
    let e = ours.recv_bytes().unwrap_err();
    assert!(matches!(e, Error::EofDuringMessage), "{e:?}");
    assert!(matches!(ours.recv_bytes(), Err(Error::Eof)));
    Ok(())
}

/// Small messages sent back to back reach the receiver in one read: the
/// ones after the first stay in the end's read-ahead. Passing the end to a
/// child passes them too (CPython's `test_fd_transfer` spirit: the child
/// continues exactly where the parent stopped), and `wait` counts them.
#[mproc::test]
fn read_ahead_messages_travel_with_a_connection_passed_to_a_child() -> mproc::Result<()> {
    let (a, b) = mproc::pipe(true)?;
    a.send_bytes(b"one")?;
    a.send_bytes(b"two")?;
    a.send_bytes(b"")?;
    a.send_bytes(&[7u8; 2000])?;
    assert_eq!(b.recv_bytes()?, b"one");
    assert_eq!(mproc::wait(&[&a, &b], Some(Duration::from_secs(60)))?, [1]);
    let child = mproc::spawn(receive_n, (b, 3))?;
    let got = child.join()?.map_err(Error::TargetError)?;
    assert_eq!(got, [b"two".to_vec(), Vec::new(), vec![7u8; 2000]]);
    // The child owned the end: its exit is end of file here.
    assert!(matches!(a.recv_bytes(), Err(Error::Eof)));
    Ok(())
}
