//! Helpers of the launch-channel tests of every OS (`tests/launch_channel.rs`
//! and the OS-specific `tests/sys/launch_channel_unix.rs`,
//! `tests/sys/launch_channel_windows.rs`). A test binary includes it with
//! `#[path = "…/common/launch.rs"] mod launch;` next to the tests' OS
//! helpers as `mod sys` (`tests/common/sys/mod.rs`) at its root. Each
//! binary uses only some of these, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sys;

/// Runs one ignored test `name` of this test binary in a test process of
/// its own (and process group) with `env`; fails if it fails or does not
/// end within `limit`, then kills what is left of it (a hung child).
pub fn run_helper(name: &str, env: &[(&str, &str)], limit: Duration) {
    let args = ["--ignored", "--exact", name, "--test-threads=1"];
    let (status, text, leader) = run_to_end(name, &args, env, limit);
    if !status.success() {
        // A failed helper may leave a hung child behind.
        sys::kill_group(leader);
    }
    assert!(status.success(), "{name}: {status}: {text}");
    assert!(text.contains("1 passed"), "{name}: {text}");
}

/// Runs this test binary with `args` (libtest's) and `env` in a process
/// of its own (and process group) and returns its status, its output
/// (stdout and stderr, interleaved) and its pid; fails, naming `what`
/// and showing the output so far, if it does not end within `limit`,
/// after killing what is left of it. The output goes to a file: a hung
/// grandchild holding a pipe would keep a reader waiting.
pub fn run_to_end(
    what: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (std::process::ExitStatus, String, u32) {
    let out_path = std::env::temp_dir().join(format!(
        "mproc-launch-channel-{what}-{}",
        std::process::id()
    ));
    let out = std::fs::File::create(&out_path).expect("the helper's output file");
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("the output file"))
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = sys::spawn_command(sys::in_own_group(&mut cmd)).expect("run this test binary");
    let leader = child.id();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait().expect("the helper's status")));
    let status = ended.recv_timeout(limit).ok();
    if status.is_none() {
        sys::kill_group(leader);
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let Some(status) = status else {
        panic!("{what} still ran after {limit:?}: {text}");
    };
    (status, text, leader)
}

#[mproc::target]
fn launched() {}

/// Starts a child of `ctx` (run in a helper process whose children hang
/// before they read their launch record: the suite's fault
/// `hang-before-record` or `forked-hang-before-record`), kills it from
/// outside, and checks `join` reports `ChildFailed` with its pid and
/// status.
pub fn kill_a_child_before_it_reads_its_record(ctx: mproc::Context) {
    let mut p = ctx.process(launched, ());
    p.start().expect("start");
    let pid = p.pid().expect("a started child has a pid");
    sys::kill_from_outside(pid);
    match p.join() {
        Err(mproc::Error::ChildFailed { pid: p, status, .. }) => {
            assert_eq!(p, pid);
            if let Some(code) = sys::KILLED_FROM_OUTSIDE {
                assert!(status.contains(&code.to_string()), "{status}");
            }
        }
        other => panic!("expected ChildFailed, got {other:?}"),
    }
    match sys::KILLED_FROM_OUTSIDE {
        Some(code) => assert_eq!(p.exitcode(), Some(code)),
        None => assert!(p.exitcode().is_some()),
    }
}
