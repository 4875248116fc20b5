//! Start methods (the guide's "Start methods"): `set_start_method`,
//! `get_start_method`, `get_context` and the forkserver. CPython:
//! `_test_multiprocessing` `TestStartMethod` (`test_context`,
//! `test_set_get`: "context has already been set"), and the forkserver's
//! life (`test_forkserver_sigkill`-like: the server ends with its parent).
//! The rest of the suite runs under the forkserver too
//! (`MPROC_START_METHOD=forkserver`, `cargo xtask test-all`).

use mproc::{Error, StartMethod};

mod common;
use common::{exit_with, nothing, sleeper};

#[mproc::target]
fn identity() -> (u32, Option<u32>, String, u32) {
    let parent = mproc::parent_process().and_then(|p| p.pid());
    (
        std::process::id(),
        parent,
        mproc::current_process().name().to_string(),
        os_parent(),
    )
}

/// The OS parent of this process, from /proc (0 where there is none).
fn os_parent() -> u32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(") ")?.1.to_string();
            after.split(' ').nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

#[mproc::target]
fn method_here() -> String {
    mproc::get_start_method().to_string()
}

#[mproc::target]
fn square(x: u64) -> u64 {
    x * x
}

/// TestStartMethod.test_set_get: a method cannot change once a process
/// was started ("context has already been set"); the method in force is
/// the default, or the suite's MPROC_START_METHOD.
#[mproc::test]
fn set_start_method_after_a_start_is_refused() {
    let mut p = mproc::Process::new(nothing, ());
    p.start().unwrap();
    p.join().unwrap();
    let err = mproc::set_start_method(StartMethod::Spawn).unwrap_err();
    assert!(matches!(err, Error::ContextAlreadySet), "{err}");
    assert_eq!(err.to_string(), "context has already been set");
    let expected = match std::env::var("MPROC_START_METHOD").as_deref() {
        Ok("forkserver") if cfg!(unix) => StartMethod::Forkserver,
        _ => StartMethod::Spawn,
    };
    assert_eq!(mproc::get_start_method(), expected);
    assert_eq!(StartMethod::Forkserver.name(), "forkserver");
    assert_eq!(StartMethod::Spawn.to_string(), "spawn");
}

/// TestStartMethod.test_context: a spawn context works everywhere, and
/// starts children by re-exec (the child's OS parent is this process).
#[mproc::test]
fn a_spawn_context_re_executes() {
    let ctx = mproc::get_context(StartMethod::Spawn).unwrap();
    assert_eq!(ctx.get_start_method(), StartMethod::Spawn);
    let (pid, parent, name, os_parent) = ctx.spawn(identity, ()).unwrap().join().unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!(parent, Some(std::process::id()));
    assert!(name.starts_with("Process-"), "{name}");
    if cfg!(target_os = "linux") {
        assert_eq!(os_parent, std::process::id());
    }
    let mut p = ctx.process(exit_with, (4,));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(4));
    let mut p = ctx.process(sleeper, (60.0,));
    p.start().unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-9));
}

/// The forkserver on Windows: `Error::Unsupported`, at `get_context` and
/// at `set_start_method` (nothing changes).
#[mproc::test]
fn forkserver_is_unsupported_where_there_is_no_fork() {
    let ctx = mproc::get_context(StartMethod::Forkserver);
    if cfg!(unix) {
        assert_eq!(ctx.unwrap().get_start_method(), StartMethod::Forkserver);
    } else {
        assert!(matches!(ctx, Err(Error::Unsupported(_))));
        assert!(matches!(
            mproc::set_start_method(StartMethod::Forkserver),
            Err(Error::Unsupported(_))
        ));
    }
}

/// A forkserver context's children are forked by the server (their OS
/// parent is the server, not this process), yet are this process's
/// children in every other way: parent link, name, results, exit codes,
/// terminate/kill (through the pidfd the server sent), sentinel,
/// is_alive, and a pool.
#[cfg(target_os = "linux")]
#[mproc::test]
fn forkserver_children_are_ordinary_children() {
    use std::time::Duration;
    let ctx = mproc::get_context(StartMethod::Forkserver).unwrap();
    let (pid, parent, name, os_parent) = ctx.spawn(identity, ()).unwrap().join().unwrap();
    assert_eq!(parent, Some(std::process::id()));
    assert!(name.starts_with("Process-"), "{name}");
    assert_ne!(os_parent, std::process::id(), "not forked by the server");
    assert_ne!(os_parent, pid);
    // The same server forks the next child.
    let second = ctx.spawn(identity, ()).unwrap().join().unwrap();
    assert_eq!(second.3, os_parent);

    // A child's method is the one it was started with (CPython's
    // preparation data): its own children are forked too.
    assert_eq!(
        ctx.spawn(method_here, ()).unwrap().join().unwrap(),
        "forkserver"
    );
    let spawn_ctx = mproc::get_context(StartMethod::Spawn).unwrap();
    assert_eq!(
        spawn_ctx.spawn(method_here, ()).unwrap().join().unwrap(),
        "spawn"
    );

    let mut p = ctx.process(exit_with, (3,));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(3));

    for (how, code) in [("terminate", -15), ("kill", -9)] {
        let mut p = ctx.process(sleeper, (60.0,));
        p.start().unwrap();
        assert!(p.is_alive().unwrap());
        if how == "kill" {
            p.kill().unwrap();
        } else {
            p.terminate().unwrap();
        }
        p.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(p.exitcode(), Some(code), "{how}");
        assert!(!p.is_alive().unwrap());
    }

    let mut pool = ctx.pool(2).unwrap();
    assert_eq!(
        pool.map(square, 0..10u64).unwrap(),
        (0..10u64).map(|x| x * x).collect::<Vec<_>>()
    );
    pool.close();
    pool.join().unwrap();
}

/// The forkserver is single-threaded, and ends with its parent, however the parent dies (SIGKILL
/// here): never an orphan server. (Its forked children follow the same
/// rules as re-exec'd ones: a non-daemonic child outlives a killed
/// parent; the test kills it.)
#[cfg(target_os = "linux")]
#[test]
fn the_forkserver_dies_with_its_parent() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut parent = Command::new(env!("CARGO_BIN_EXE_mproc-logging"))
        .arg("forkserver-orphan")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the fixture");
    let mut out = BufReader::new(parent.stdout.take().expect("stdout"));
    let (mut server, mut child) = (0i32, 0i32);
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(p) = line.trim().strip_prefix("server ") {
            server = p.parse().unwrap();
        } else if let Some(p) = line.trim().strip_prefix("child ") {
            child = p.parse().unwrap();
        } else if line.trim() == "ready" {
            break;
        }
        line.clear();
    }
    assert!(server > 0 && child > 0, "server {server}, child {child}");
    assert!(alive(server));
    // Single-threaded: the server forks, and a fork copies one thread.
    let threads = std::fs::read_dir(format!("/proc/{server}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(threads, 1, "the forkserver runs {threads} threads");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(server) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let server_alive = alive(server);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        if server_alive {
            libc::kill(server, libc::SIGKILL);
        }
    }
    assert!(!server_alive, "the forkserver {server} outlived its parent");
}

/// Whether `pid` is running (not gone, not a zombie).
#[cfg(target_os = "linux")]
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, r)| r.split(' ').next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}
