//! The inherited launch channel (issue 14 item 1), attacked and misused:
//! a child started by re-exec gets one end of a socket pair, named by the
//! entry token `mproc2:<descriptor>`, with no listener, name or secret.
//! What keeps that safe is that the end reaches that one child and no
//! other process, and that a child refuses a token naming anything but
//! such an end. Unix descriptors: `launch_channel_windows.rs` is the
//! Windows twin, `tests/launch_channel.rs` holds what does not depend on
//! the OS.

#![cfg(unix)]

#[path = "../common/sys/mod.rs"]
mod sys;

#[path = "../common/launch.rs"]
mod launch;
use launch::run_helper;

#[path = "../common/refused.rs"]
mod refused;
use refused::assert_refused;

use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const FIXTURE: &str = env!("CARGO_BIN_EXE_mproc-fixture");

/// The `spawn` start method, whatever `MPROC_START_METHOD` says: the
/// inherited channel is that method's.
fn spawn_ctx() -> mproc::Context {
    mproc::get_context(mproc::StartMethod::Spawn).expect("the spawn start method")
}

/// The `forkserver` start method (Linux), whatever `MPROC_START_METHOD`
/// says: its forked children inherit their channel through the server.
#[cfg(target_os = "linux")]
fn fs_ctx() -> mproc::Context {
    mproc::get_context(mproc::StartMethod::Forkserver).expect("the forkserver start method")
}

/// The socket descriptors (`socket:[inode]` links) of process `pid`.
fn sockets_of(pid: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(e.path()) {
            let link = link.to_string_lossy().into_owned();
            if link.starts_with("socket:") {
                found.push(link);
            }
        }
    }
    found
}

/// The sockets this child holds while its target runs.
#[mproc::target]
fn my_sockets() -> Vec<String> {
    sockets_of("self")
}

/// `ls -l /proc/self/fd/` started with std's `Command`: what a process
/// started here holds.
fn grandchild_listing() -> String {
    let listing = Command::new("ls")
        .args(["-l", "/proc/self/fd/"])
        .stdin(Stdio::null())
        .output()
        .expect("run ls");
    String::from_utf8_lossy(&listing.stdout).into_owned()
}

/// Two threads start children at the same time: mproc children (each a
/// launch with its socket pair in flight) and plain `Command` children.
/// No plain child holds a socket, and each mproc child holds exactly one,
/// its own channel: no channel end (the parent's or a child's) leaks into
/// a process started meanwhile.
#[mproc::test]
fn a_concurrent_spawn_inherits_no_launch_channel() {
    const ROUNDS: usize = 25;
    let go = Arc::new(Barrier::new(2));
    let plain = {
        let go = go.clone();
        std::thread::spawn(move || {
            go.wait();
            let mut leaks = Vec::new();
            for _ in 0..ROUNDS {
                // `ls` lists what it holds once its exec is complete (a
                // close-on-exec descriptor may still show in
                // /proc/<pid>/fd just after `spawn` returns).
                let listing = grandchild_listing();
                if listing.contains("socket:") {
                    leaks.push(listing);
                }
            }
            leaks
        })
    };
    go.wait();
    let handles: Vec<_> = (0..ROUNDS)
        .map(|_| spawn_ctx().spawn(my_sockets, ()).expect("spawn"))
        .collect();
    for h in handles {
        let sockets = h.join().expect("the child ran");
        assert_eq!(
            sockets.len(),
            1,
            "a child holds another launch's channel, or none: {sockets:?}"
        );
    }
    let leaks = plain.join().expect("the plain spawner");
    assert!(leaks.is_empty(), "a plain child inherited: {leaks:?}");
}

/// What a child holds, and what a process it starts with std's
/// `Command` holds.
#[mproc::target]
fn sockets_here_and_in_a_grandchild() -> (Vec<String>, String) {
    (sockets_of("self"), grandchild_listing())
}

/// The child's end is close-on-exec once the child has it: a process the
/// child starts does not inherit its channel to the parent.
#[mproc::test]
fn the_childs_channel_is_close_on_exec() {
    let (here, grandchild) = spawn_ctx()
        .spawn(sockets_here_and_in_a_grandchild, ())
        .expect("spawn")
        .join()
        .expect("the child ran");
    assert_eq!(here.len(), 1, "the child's own channel: {here:?}");
    assert!(
        grandchild.contains("/dev/null"),
        "the grandchild's listing: {grandchild}"
    );
    assert!(
        !grandchild.contains("socket:"),
        "the grandchild inherited a socket: {grandchild}"
    );
}

/// Runs the fixture (which starts a child in `main`) with the entry
/// token `mproc2:<fd>` and descriptor 5 set up by `sh` as `redirect`
/// says, from a shell that stays the fixture's parent.
fn fixture_with_token(token: &str, redirect: &str, stdin: Stdio) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" hello {redirect}; exit $?"))
        .arg(FIXTURE)
        .env("MPROC_ENTRY_TOKEN", token)
        .stdin(stdin)
        .output()
        .expect("run the fixture under sh")
}

/// A token naming a descriptor that is closed, a standard stream, not a
/// socket (a malformed one: `tests/launch_channel.rs`), not a Unix stream socket, or a Unix socket whose other end is
/// not the parent's (here the test's, two generations up: what a process
/// would hold that inherited someone else's socket) is refused: exit 121
/// and one line saying why; `main` never runs.
#[test]
fn a_token_naming_anything_but_the_parents_channel_is_refused() {
    let none = || Stdio::null();
    assert_refused(
        &fixture_with_token("mproc2:5", "5<&- </dev/null", none()),
        "descriptor 5 is not open",
    );
    assert_refused(
        &fixture_with_token("mproc2:1", "</dev/null", none()),
        "descriptor 1 is a standard stream",
    );
    assert_refused(
        &fixture_with_token("mproc2:5", "5<\"$0\" </dev/null", none()),
        "descriptor 5 is not a socket",
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    assert_refused(
        &fixture_with_token("mproc2:5", "5<&0 </dev/null", OwnedFd::from(udp).into()),
        "descriptor 5 is not a Unix stream socket",
    );
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    assert_refused(
        &fixture_with_token("mproc2:5", "5<&0 </dev/null", OwnedFd::from(theirs).into()),
        "is not a channel from this process's parent",
    );
    drop(ours);
}

/// A forkserver's forked child killed (from outside) before it read its
/// launch record is `ChildFailed` (the fault hits the child, not the
/// server; the spawn case is `tests/launch_channel.rs`): its channel end waits in the server's fork, then in the
/// child, with the record and handles the parent wrote at once.
#[cfg(target_os = "linux")]
#[mproc::test]
#[ignore = "run by a_forked_child_killed_before_reading_its_record_fails_to_start"]
fn helper_kill_a_forked_child_before_it_reads_its_record() {
    launch::kill_a_child_before_it_reads_its_record(fs_ctx());
}

#[cfg(target_os = "linux")]
#[test]
fn a_forked_child_killed_before_reading_its_record_fails_to_start() {
    run_helper(
        "helper_kill_a_forked_child_before_it_reads_its_record",
        &[("MPROC_TEST_FAULT", "forked-hang-before-record")],
        Duration::from_secs(60),
    );
}

#[mproc::target]
fn wait_for_eof(r: mproc::Connection) {
    // Returns when the test closes its end (or the test process dies).
    let _ = r.recv_bytes();
}

/// A stranger of the same user has no way in: the launch binds no
/// socket file (this process's runtime directory holds none), and the
/// child's channel cannot be opened through `/proc/<pid>/fd` (a socket
/// is not reopened by path). Only inheriting it reaches it.
#[mproc::test]
fn an_inherited_channel_has_no_name_a_stranger_could_open() {
    no_name_a_stranger_could_open(spawn_ctx());
}

/// The same for a forkserver's forked child.
#[cfg(target_os = "linux")]
#[mproc::test]
fn a_forked_childs_channel_has_no_name_a_stranger_could_open() {
    no_name_a_stranger_could_open(fs_ctx());
}

fn no_name_a_stranger_could_open(ctx: mproc::Context) {
    let (r, w) = mproc::pipe(true).expect("a pipe");
    let mut p = ctx.process(wait_for_eof, (r,));
    p.start().expect("start");
    let pid = p.pid().expect("a started child has a pid");
    let prefix = format!("mproc-{}-", std::process::id());
    let mut bases = vec![std::env::temp_dir()];
    bases.extend(std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from));
    let named: Vec<_> = bases
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert!(named.is_empty(), "a launch left a named socket: {named:?}");
    let mut sockets = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the child's descriptors")
        .flatten()
    {
        let is_socket =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if is_socket {
            sockets += 1;
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path());
            assert!(
                opened.is_err(),
                "the child's socket {:?} opened by path",
                e.path()
            );
        }
    }
    assert!(sockets >= 1, "the child holds its channel");
    drop(w);
    p.join().expect("join");
    assert_eq!(p.exitcode(), Some(0));
}

/// Forkserver children started side by side (several launches in flight,
/// each one's channel end passing through the server) each hold exactly
/// one socket, their own channel: the server's fork closes the others'.
#[cfg(target_os = "linux")]
#[mproc::test]
fn forked_children_hold_only_their_own_channel() {
    let ctx = fs_ctx();
    let handles: Vec<_> = (0..8)
        .map(|_| ctx.spawn(my_sockets, ()).expect("spawn"))
        .collect();
    for h in handles {
        let sockets = h.join().expect("the child ran");
        assert_eq!(sockets.len(), 1, "a forked child holds {sockets:?}");
    }
}

/// This process's OS parent, from /proc.
#[cfg(target_os = "linux")]
#[mproc::target]
fn os_parent() -> u32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A stranger (another process of this user) has no way to ask the
/// forkserver for a child, nor for a child's channel: none of the
/// server's sockets is a listener or has a name (`/proc/net/unix`), and
/// none can be opened through `/proc/<server>/fd`. Its request channel is
/// one end of a socket pair only the parent holds the other end of.
#[cfg(target_os = "linux")]
#[mproc::test]
fn a_stranger_cannot_reach_the_forkserver() {
    let server = fs_ctx()
        .spawn(os_parent, ())
        .expect("spawn")
        .join()
        .expect("the child ran");
    assert_ne!(server, std::process::id(), "forked by the server");
    let sockets = sockets_of(&server.to_string());
    assert!(!sockets.is_empty(), "the server holds its request channel");
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    for socket in &sockets {
        let inode = socket
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .to_string();
        // Num RefCount Protocol Flags Type St Inode [Path]
        let row: Vec<&str> = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.get(6) == Some(&inode.as_str()))
            .unwrap_or_else(|| panic!("{socket} is not a Unix socket"));
        assert_ne!(row[3], "00010000", "{socket} is a listener: {row:?}");
        assert_eq!(row.len(), 7, "{socket} has a name: {row:?}");
    }
    for e in std::fs::read_dir(format!("/proc/{server}/fd"))
        .expect("the server's descriptors")
        .flatten()
    {
        let is_socket =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if is_socket {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path());
            assert!(opened.is_err(), "the server's socket {:?} opened", e.path());
        }
    }
}

/// A forked child whose channel the parent did not make is refused by
/// the child: exit 121, one line saying why, its target never runs, and
/// the parent's `join` reports it. (The test suite's fault
/// `foreign-channel` makes the parent send the server its stdin, a socket
/// this test made, as the child's end: what a parent tricked into passing
/// on someone else's socket would send. The maker the child expects comes
/// from the kernel, the server's request channel's peer, not from the
/// request: a forged request cannot change it.)
#[cfg(target_os = "linux")]
#[test]
fn a_forked_child_refuses_a_channel_its_parent_did_not_make() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let out = Command::new(FIXTURE)
        .arg("hello")
        .env("MPROC_START_METHOD", "forkserver")
        .env("MPROC_TEST_FAULT", "foreign-channel")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .output()
        .expect("run the fixture");
    drop(ours);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("is not a channel from this process's parent"),
        "{stderr}"
    );
    assert!(stderr.contains("failed to start"), "{stderr}");
    assert!(stderr.contains("exitcode 121"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hello world"),
        "the target ran: {out:?}"
    );
}
