//! The inherited launch channel (issue 14 item 1), misused and attacked
//! in the ways that do not depend on the OS: a child started by re-exec
//! gets its channel end (a descriptor on Unix, a pipe handle on Windows)
//! named by the entry token `mproc2:<value>`. What a descriptor or handle
//! can be made to name is OS-specific: `tests/sys/launch_channel_unix.rs`
//! and `tests/sys/launch_channel_windows.rs`.

#[path = "common/sys/mod.rs"]
mod sys;

#[path = "common/launch.rs"]
mod launch;
use launch::run_helper;

#[path = "common/refused.rs"]
mod refused;
use refused::assert_refused;

use std::process::{Command, Stdio};
use std::time::Duration;

const FIXTURE: &str = env!("CARGO_BIN_EXE_mproc-fixture");

/// The `spawn` start method, whatever `MPROC_START_METHOD` says: the
/// inherited channel is that method's.
fn spawn_ctx() -> mproc::Context {
    mproc::get_context(mproc::StartMethod::Spawn).expect("the spawn start method")
}

/// A token whose value is not a number (empty, signed, too large for 64
/// bits, padded, hexadecimal) is refused before anything is looked up:
/// exit 121 and one line saying why; `main` never runs.
#[test]
fn a_malformed_inherited_token_is_refused() {
    for token in [
        "mproc2:",
        "mproc2:x5",
        "mproc2:-1",
        "mproc2: 5",
        "mproc2:0x5",
        "mproc2:18446744073709551616",
    ] {
        let out = sys::command_output(
            Command::new(FIXTURE)
                .arg("hello")
                .env("MPROC_ENTRY_TOKEN", token)
                .stdin(Stdio::null()),
        )
        .expect("run the fixture");
        assert_refused(&out, "malformed descriptor");
    }
}

/// Helper of `a_child_killed_before_reading_its_record_fails_to_start`,
/// run by it in a test process of its own whose children hang before
/// they read their launch record (the suite's fault
/// `hang-before-record`).
#[mproc::test]
#[ignore = "run by a_child_killed_before_reading_its_record_fails_to_start"]
fn helper_kill_a_child_before_it_reads_its_record() {
    launch::kill_a_child_before_it_reads_its_record(spawn_ctx());
}

/// A child killed (from outside) before it read its launch record — the
/// record and handles wait in its channel — is reported by `join` as
/// `ChildFailed` with its pid and status, not a hang nor a success.
#[test]
fn a_child_killed_before_reading_its_record_fails_to_start() {
    run_helper(
        "helper_kill_a_child_before_it_reads_its_record",
        &[("MPROC_TEST_FAULT", "hang-before-record")],
        Duration::from_secs(60),
    );
}

/// The length and byte sum of what the child received.
#[mproc::target]
fn sum_of(bytes: Vec<u8>) -> (usize, u64) {
    (bytes.len(), bytes.iter().map(|&b| u64::from(b)).sum())
}

/// Helper of `a_hung_child_never_holds_a_large_records_writer`: its
/// children hang before they read their record, with a 1 s start
/// deadline.
#[mproc::test]
#[ignore = "run by a_hung_child_never_holds_a_large_records_writer"]
fn helper_a_hung_child_with_a_large_record() {
    let bytes = vec![1u8; 8 << 20];
    let h = spawn_ctx().spawn(sum_of, (bytes,)).expect("spawn");
    match h.join() {
        Err(mproc::Error::ChildFailed { status, .. }) => {
            assert!(status.contains("killed"), "{status}");
        }
        other => panic!("expected ChildFailed, got {other:?}"),
    }
}

/// A launch record larger than the channel's buffer, for a child that
/// hangs before reading it: the child is killed at the start deadline,
/// the writer gives up and `join` reports it (the helper ends instead of
/// blocking in a write forever; the limit is a hang detector, far above
/// the 1 s deadline).
#[test]
fn a_hung_child_never_holds_a_large_records_writer() {
    run_helper(
        "helper_a_hung_child_with_a_large_record",
        &[
            ("MPROC_TEST_FAULT", "hang-before-record"),
            ("MPROC_START_TIMEOUT_SECS", "1"),
        ],
        Duration::from_secs(60),
    );
}

/// A launch record of 4 MiB (far more than what `start()` sends at once
/// and than the channel's buffer) reaches the child whole: the launcher
/// writes it while the child reads.
#[mproc::test]
fn a_launch_record_larger_than_the_channels_buffer_arrives_whole() {
    let bytes: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = (
        bytes.len(),
        bytes.iter().map(|&b| u64::from(b)).sum::<u64>(),
    );
    let got = spawn_ctx()
        .spawn(sum_of, (bytes,))
        .expect("spawn")
        .join()
        .expect("the child ran");
    assert_eq!(got, expected);
}

#[mproc::target]
fn echo(c: mproc::Connection) {
    let got = c.recv_bytes().expect("a message");
    c.send_bytes(&got).expect("send it back");
}

/// Handles passed in a child's arguments (sent beside the launch record
/// on the inherited channel) still arrive and work.
#[mproc::test]
fn handles_in_args_arrive() {
    let (ours, theirs) = mproc::pipe(true).expect("a pipe");
    let mut p = spawn_ctx().process(echo, (theirs,));
    p.start().expect("start");
    ours.send_bytes(b"through the child").expect("send");
    assert_eq!(ours.recv_bytes().expect("the echo"), b"through the child");
    p.join().expect("join");
    assert_eq!(p.exitcode(), Some(0));
}
