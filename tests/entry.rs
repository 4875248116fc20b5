//! The entry and the exit procedure, seen from outside: whole programs
//! (`src/bin/mproc-fixture.rs`) run as real processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = env!("CARGO_BIN_EXE_mproc-fixture");

fn run(scenario: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(FIXTURE);
    cmd.arg(scenario);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the fixture")
}

fn pid_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for a reaper has ended too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if pid_is_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn field(out: &str, key: &str) -> u32 {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

#[test]
fn checklist_15_exit_terminates_daemons_and_joins_the_rest() {
    let t = Instant::now();
    let out = run("exit-procedure", &[]);
    let took = t.elapsed();
    assert!(out.status.success(), "{out:?}");
    // The 1 s child was joined; the 100 s daemon was terminated.
    assert!(took >= Duration::from_millis(900), "exited after {took:?}");
    assert!(took < Duration::from_secs(30), "exited after {took:?}");
    let daemon = field(&String::from_utf8_lossy(&out.stdout), "daemon-pid ");
    assert!(wait_gone(daemon, Duration::from_secs(5)), "daemon {daemon} still runs");
}

#[test]
fn garbled_token_is_one_line_and_a_distinct_exit_code() {
    for token in ["garbage", "mproc1:zz:/nowhere", "mproc1:00:/nonexistent/dir/c0.sock", "mproc9:00:x"] {
        let out = run("hello", &[("MPROC_ENTRY_TOKEN", token)]);
        assert_eq!(out.status.code(), Some(mproc::BOOTSTRAP_EXIT_CODE), "{token}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cannot start"), "{stderr}");
        // main never ran: it would have printed "hello".
        assert!(out.stdout.is_empty(), "main ran in a child: {out:?}");
    }
}

/// A child that dies or hangs at each stage of its bootstrap gives the
/// parent a clear error naming its pid and status, never a hang.
#[test]
fn child_dying_during_the_launch_is_a_clear_error() {
    for (fault, status) in [
        ("before-connect", "exitcode 7"),
        ("in-handshake", "exitcode 7"),
        ("after-handshake", "exitcode 7"),
        ("hang-before-connect", "killed"),
        ("hang-after-handshake", "killed"),
    ] {
        let t = Instant::now();
        let out = run(
            "hello",
            &[("MPROC_TEST_FAULT", fault), ("MPROC_START_TIMEOUT_SECS", "2")],
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{fault}: took {:?}", t.elapsed());
        assert!(!out.status.success(), "{fault}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("failed to start"), "{fault}: {stderr}");
        assert!(stderr.contains(status), "{fault}: {stderr}");
        assert!(stderr.contains("child process "), "{fault}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("hello world"), "{fault}");
    }
}

/// Beyond CPython: a daemonic child dies when its parent is killed outright.
#[test]
fn daemonic_child_dies_with_a_killed_parent() {
    let mut fixture = Command::new(FIXTURE)
        .arg("daemon-grandchild")
        .stdout(Stdio::piped())
        .spawn()
        .expect("fixture");
    let stdout = fixture.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut parent = None;
    let mut daemon = None;
    while parent.is_none() || daemon.is_none() {
        let line = lines.next().expect("fixture output").expect("line");
        if let Some(p) = line.strip_prefix("parent-pid ") {
            parent = p.trim().parse::<u32>().ok();
        }
        if let Some(d) = line.strip_prefix("daemon-pid ") {
            daemon = d.trim().parse::<u32>().ok();
        }
    }
    let (parent, daemon) = (parent.unwrap_or(0), daemon.unwrap_or(0));
    assert!(!pid_is_gone(daemon));
    let killed = Command::new("kill").args(["-9", &parent.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    assert!(
        wait_gone(daemon, Duration::from_secs(5)),
        "daemon {daemon} outlived its killed parent {parent}"
    );
    let status = fixture.wait().expect("fixture exits");
    assert!(status.success(), "{status:?}");
}
