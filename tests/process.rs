//! Process, spawn and the entry, through the public API, with real child
//! processes. Each test names the CPython checklist item it covers
//! (the CPython 3.11 behaviour checklist).

use std::time::{Duration, Instant};

use mproc::{Error, Process};

mod common;
use common::{exit_with, nothing, sleeper};

#[mproc::target]
fn panics(msg: String) {
    panic!("{msg}");
}

#[mproc::target]
fn fails(msg: String) -> Result<(), String> {
    Err(msg)
}

#[mproc::target]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[mproc::target]
fn checked_div(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 {
        Err("division by zero".into())
    } else {
        Ok(a / b)
    }
}

#[mproc::target]
fn six(a: u8, b: u16, c: u32, d: u64, e: String, mut f: Vec<i32>) -> String {
    f.push(1);
    format!("{a} {b} {c} {d} {e} {f:?}")
}

/// What a child reports about itself: name, pid, authkey, parent (pid,
/// name), and the default name of a Process it creates.
type IdentityReport = (String, Option<u32>, Vec<u8>, Option<(u32, String)>, String);

#[mproc::target]
fn identity_report() -> IdentityReport {
    let me = mproc::current_process();
    let parent = mproc::parent_process().map(|p| (p.pid().unwrap_or(0), p.name().to_string()));
    let child = Process::new(nothing, ());
    (
        me.name().to_string(),
        me.pid(),
        me.authkey().to_vec(),
        parent,
        child.name().to_string(),
    )
}

/// A daemonic child tries to start a child of its own: exit 3 if refused
/// with the right error.
#[mproc::target]
fn daemon_spawns() {
    let mut p = Process::new(nothing, ());
    match p.start() {
        Err(Error::DaemonicChildren) => std::process::exit(3),
        _ => std::process::exit(4),
    }
}

#[mproc::target]
fn read_stdin() -> usize {
    use std::io::Read;
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).unwrap_or(usize::MAX)
}

/// Not registered: no #[mproc::target].
fn unregistered() {}

fn name_number(name: &str) -> u32 {
    name.strip_prefix("Process-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected name {name}"))
}

#[mproc::test]
fn checklist_01_names_count_constructions() {
    let a = Process::new(nothing, ());
    let b = Process::new(nothing, ());
    assert!(name_number(b.name()) > name_number(a.name()));
    let named = Process::new(nothing, ()).with_name("p1");
    assert_eq!(named.name(), "p1");
    let mut renamed = Process::new(nothing, ());
    renamed.set_name("worker");
    assert_eq!(renamed.name(), "worker");
}

#[mproc::test]
fn checklist_01_child_names_its_children_n_colon_m() -> mproc::Result<()> {
    // The spawned process is Process-N; its first child is Process-N:1.
    let h = mproc::spawn(identity_report, ())?;
    let (name, _pid, _key, _parent, child_name) = h.join()?;
    name_number(&name);
    assert!(name.starts_with("Process-"), "{name}");
    assert_eq!(child_name, format!("{name}:1"));
    Ok(())
}

#[mproc::test]
fn checklist_02_unstarted_process() {
    let mut p = Process::new(nothing, ());
    assert!(!p.is_alive().unwrap());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.pid(), None);
    assert!(matches!(p.sentinel(), Err(Error::NotStarted)));
    assert!(matches!(p.join(), Err(Error::JoinNotStarted)));
    assert_eq!(
        p.join().unwrap_err().to_string(),
        "can only join a started process"
    );
}

#[mproc::test]
fn checklist_03_start_twice_fails() -> mproc::Result<()> {
    let mut p = Process::new(nothing, ());
    p.start()?;
    let e = p.start().unwrap_err();
    assert!(matches!(e, Error::StartedTwice));
    assert_eq!(e.to_string(), "cannot start a process twice");
    p.join()?;
    Ok(())
}

#[mproc::test]
fn checklist_04_daemon_flag_after_start_and_daemon_children() -> mproc::Result<()> {
    let mut p = Process::new(nothing, ()).with_daemon(true);
    assert!(p.daemon());
    p.set_daemon(false)?;
    p.set_daemon(true)?;
    p.start()?;
    let e = p.set_daemon(false).unwrap_err();
    assert_eq!(e.to_string(), "process has already started");
    p.join()?;

    let mut d = Process::new(daemon_spawns, ()).with_daemon(true);
    d.start()?;
    d.join()?;
    assert_eq!(
        d.exitcode(),
        Some(3),
        "a daemonic child must not start children"
    );
    Ok(())
}

#[mproc::test]
fn checklist_05_join_timeout_on_a_running_child() -> mproc::Result<()> {
    let mut p = Process::new(sleeper, (10.0,));
    p.start()?;
    let t = Instant::now();
    p.join_timeout(Duration::from_millis(200))?;
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    assert!(p.is_alive()?);
    assert_eq!(p.exitcode(), None);
    let t = Instant::now();
    p.join_timeout(Duration::ZERO)?;
    assert!(t.elapsed() < Duration::from_secs(1));
    p.terminate()?;
    p.join()?;
    Ok(())
}

#[mproc::test]
fn checklist_06_after_the_target_returns() -> mproc::Result<()> {
    let mut p = Process::new(nothing, ());
    p.start()?;
    let pid = p.pid().expect("started");
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive()?);
    assert!(mproc::active_children()
        .iter()
        .all(|c| c.pid() != Some(pid)));
    Ok(())
}

#[mproc::test]
fn checklist_06_active_children_lists_live_ones() -> mproc::Result<()> {
    let mut p = Process::new(sleeper, (10.0,));
    p.start()?;
    let pid = p.pid();
    let live = mproc::active_children();
    let me = live.into_iter().find(|c| c.pid() == pid);
    let mut me = me.expect("a running child is an active child");
    assert!(me.is_alive()?);
    assert_eq!(me.name(), p.name());
    p.kill()?;
    me.join_timeout(Duration::from_secs(10))?;
    assert!(!me.is_alive()?);
    p.join()?;
    assert!(mproc::active_children().iter().all(|c| c.pid() != pid));
    Ok(())
}

#[mproc::test]
fn checklist_07_panic_gives_exitcode_1() -> mproc::Result<()> {
    let mut p = Process::new(panics, ("boom".to_string(),));
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(1));
    Ok(())
}

#[mproc::test]
fn checklist_08_exit_codes() -> mproc::Result<()> {
    for (code, expected) in [(0, 0), (3, 3), (8, 8), (255, 255)] {
        let mut p = Process::new(exit_with, (code,));
        p.start()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(expected));
    }
    let mut p = Process::new(fails, ("bad input".to_string(),));
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(1), "a target's Err is exit code 1");
    Ok(())
}

#[mproc::test]
fn checklist_09_terminate_and_kill() -> mproc::Result<()> {
    let mut t = Process::new(sleeper, (30.0,));
    let mut k = Process::new(sleeper, (30.0,));
    t.start()?;
    k.start()?;
    t.terminate()?;
    k.kill()?;
    t.join()?;
    k.join()?;
    assert_eq!(t.exitcode(), Some(-15));
    assert_eq!(k.exitcode(), Some(-9));
    // No-ops after exit.
    t.terminate()?;
    t.kill()?;
    k.kill()?;
    assert_eq!(t.exitcode(), Some(-15));
    assert_eq!(k.exitcode(), Some(-9));
    Ok(())
}

#[mproc::test]
fn checklist_10_close() -> mproc::Result<()> {
    let mut p = Process::new(sleeper, (30.0,)).with_name("closing");
    p.start()?;
    let e = p.close().unwrap_err();
    assert!(matches!(e, Error::CloseRunning));
    assert!(e
        .to_string()
        .starts_with("Cannot close a process while it is still running"));
    p.kill()?;
    p.join()?;
    let pid = p.pid();
    p.close()?;
    p.close()?; // twice is fine
    for e in [
        p.start().unwrap_err(),
        p.join().unwrap_err(),
        p.join_timeout(Duration::ZERO).unwrap_err(),
        p.terminate().unwrap_err(),
        p.kill().unwrap_err(),
        p.is_alive().unwrap_err(),
        p.sentinel().err().expect("sentinel after close"),
    ] {
        assert!(matches!(e, Error::ProcessClosed), "{e}");
        assert_eq!(e.to_string(), "process object is closed");
    }
    assert_eq!(p.name(), "closing");
    assert_eq!(p.pid(), pid);
    assert_eq!(p.exitcode(), Some(-9));
    assert_eq!(p.authkey().len(), 32);
    let mut unstarted = Process::new(nothing, ());
    unstarted.close()?;
    Ok(())
}

#[mproc::test]
fn checklist_11_sentinel() -> mproc::Result<()> {
    let mut p = Process::new(sleeper, (30.0,));
    p.start()?;
    {
        let s = p.sentinel()?;
        assert_eq!(
            mproc::wait(&[&s], Some(Duration::from_millis(100)))?,
            Vec::<usize>::new()
        );
    }
    p.terminate()?;
    {
        let s = p.sentinel()?;
        assert_eq!(mproc::wait(&[&s], Some(Duration::from_secs(10)))?, vec![0]);
    }
    p.join()?;
    Ok(())
}

#[mproc::test]
fn checklist_12_main_process() {
    let me = mproc::current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.authkey().len(), 32);
    assert_eq!(me.pid(), Some(std::process::id()));
    assert!(mproc::parent_process().is_none());
}

#[mproc::test]
fn checklist_13_14_child_sees_parent_and_inherits_authkey() -> mproc::Result<()> {
    let h = mproc::spawn(identity_report, ())?;
    let pid = h.pid();
    let (name, child_pid, key, parent, _) = h.join()?;
    assert!(name.starts_with("Process-"));
    assert_eq!(child_pid, Some(pid));
    assert_eq!(key, mproc::current_process().authkey());
    assert_eq!(
        parent,
        Some((std::process::id(), "MainProcess".to_string()))
    );
    Ok(())
}

#[mproc::test]
fn checklist_17_many_processes() -> mproc::Result<()> {
    let mut ps: Vec<Process> = (0..100).map(|_| Process::new(nothing, ())).collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut ps: Vec<Process> = (0..100).map(|_| Process::new(sleeper, (30.0,))).collect();
    for p in &mut ps {
        p.start()?;
        p.terminate()?;
    }
    for p in &mut ps {
        p.join()?;
        assert_eq!(p.exitcode(), Some(-15));
    }
    Ok(())
}

#[mproc::test]
fn spawn_returns_the_value() -> mproc::Result<()> {
    let h = mproc::spawn(add, (40, 2))?;
    assert!(h.pid() > 0);
    assert_eq!(h.join()?, 42);
    assert_eq!(mproc::spawn(checked_div, (7, 2))?.join()?, Ok(3));
    assert_eq!(
        mproc::spawn(checked_div, (7, 0))?.join()?,
        Err("division by zero".to_string())
    );
    Ok(())
}

#[mproc::test]
fn spawn_six_arguments_with_mut_patterns() -> mproc::Result<()> {
    let h = mproc::spawn(six, (1, 2, 3, 4, "five".to_string(), vec![6]))?;
    assert_eq!(h.join()?, "1 2 3 4 five [6, 1]");
    Ok(())
}

#[mproc::test]
fn spawn_panic_carries_message_and_location() -> mproc::Result<()> {
    let h = mproc::spawn(panics, ("it broke".to_string(),))?;
    match h.join() {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "it broke");
            assert!(location.contains("tests/process.rs:"), "{location}");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    Ok(())
}

#[mproc::test]
fn spawn_exit_without_result_is_an_error() -> mproc::Result<()> {
    let h = mproc::spawn(exit_with, (5,))?;
    let pid = h.pid();
    match h.join() {
        Err(Error::NoResult {
            pid: p, exitcode, ..
        }) => {
            assert_eq!(p, pid);
            assert_eq!(exitcode, 5);
        }
        other => panic!("expected NoResult, got {other:?}"),
    }
    Ok(())
}

#[mproc::test]
fn join_handle_is_alive_join_timeout_and_kill() -> mproc::Result<()> {
    let h = mproc::spawn(sleeper, (30.0,))?;
    assert!(h.is_alive()?);
    h.join_timeout(Duration::from_millis(50))?;
    assert!(h.is_alive()?);
    h.kill()?;
    h.join_timeout(Duration::from_secs(10))?;
    assert!(!h.is_alive()?);
    assert!(matches!(
        h.join(),
        Err(Error::NoResult { exitcode: -9, .. })
    ));
    Ok(())
}

#[mproc::test]
fn child_stdin_is_null() -> mproc::Result<()> {
    assert_eq!(mproc::spawn(read_stdin, ())?.join()?, 0);
    Ok(())
}

#[mproc::test]
fn run_calls_the_target_here_once() -> mproc::Result<()> {
    let mut p = Process::new(fails, ("here".to_string(),));
    match p.run() {
        Err(Error::TargetError(m)) => assert_eq!(m, "here"),
        other => panic!("{other:?}"),
    }
    assert!(p.start().is_err(), "a process that ran cannot be started");
    let mut q = Process::new(nothing, ());
    q.start()?;
    assert!(matches!(q.run(), Err(Error::RunAfterStart)));
    q.join()?;
    Ok(())
}

#[mproc::test]
fn target_stays_an_ordinary_fn() {
    assert_eq!(add(1, 2), 3);
}

#[mproc::test]
fn unregistered_target_is_an_error_naming_it() {
    let mut p = Process::new(unregistered, ());
    let e = p.start().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnregisteredTarget { .. }));
    assert!(msg.contains("unregistered"), "{msg}");
    assert!(msg.contains("#[mproc::target]"), "{msg}");
    // Issue 12 item 10: a closure is refused with words that say so.
    match mproc::spawn(|| 1u8, ()) {
        Err(e @ Error::ClosureTarget { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("closures cannot be targets"), "{msg}");
            assert!(!msg.contains("fn {{closure}}"), "{msg}");
        }
        other => panic!("a closure is not a target: {other:?}"),
    }
}

#[mproc::test]
fn cpu_count_is_positive() {
    assert!(mproc::cpu_count() >= 1);
}

#[mproc::test]
#[ignore = "shows that #[mproc::test] composes with #[ignore]"]
fn composes_with_ignore() {
    panic!("ignored tests do not run");
}

#[mproc::test]
#[should_panic(expected = "expected failure")]
fn composes_with_should_panic() {
    let mut p = Process::new(nothing, ());
    p.start().unwrap();
    p.join().unwrap();
    panic!("expected failure");
}

/// Arguments whose decoding always fails in the child.
struct Poison;

impl serde::Serialize for Poison {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(0)
    }
}

impl<'de> serde::Deserialize<'de> for Poison {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("poisoned argument"))
    }
}

#[mproc::target]
fn takes_poison(_p: Poison) {}

#[mproc::test]
fn args_that_fail_to_decode_are_an_error_naming_pid_and_status() -> mproc::Result<()> {
    // `start()` returns while the child starts up (as CPython's does);
    // `join()` reports a child that could not start.
    let mut p = Process::new(takes_poison, (Poison,));
    p.start().expect("the child process is created");
    match p.join() {
        Err(Error::ChildFailed {
            pid,
            status,
            reason,
        }) => {
            assert!(pid > 0);
            assert_eq!(status, format!("exitcode {}", mproc::BOOTSTRAP_EXIT_CODE));
            assert!(
                reason.contains("cannot decode the target's arguments"),
                "{reason}"
            );
            assert!(reason.contains("Poison"), "{reason}");
        }
        other => panic!("expected ChildFailed, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(mproc::BOOTSTRAP_EXIT_CODE));
    // Asked again, the same answer.
    assert!(matches!(p.join(), Err(Error::ChildFailed { .. })));
    // A spawned one: the same error from its handle's join.
    match mproc::spawn(takes_poison, (Poison,))?.join() {
        Err(Error::ChildFailed { reason, .. }) => assert!(reason.contains("Poison"), "{reason}"),
        other => panic!("expected ChildFailed, got {other:?}"),
    }
    Ok(())
}

#[mproc::target]
fn watch_parent(path: String) {
    let mut parent = mproc::parent_process().expect("a child has a parent");
    let before = parent.is_alive().unwrap_or(false);
    let _ = std::fs::write(format!("{path}.ready"), "");
    let _ = parent.join_timeout(Duration::from_secs(20));
    let after = parent.is_alive().unwrap_or(true);
    let _ = std::fs::write(path, format!("{before} {after}"));
}

#[mproc::target]
fn start_watcher_and_vanish(path: String) {
    let ready = format!("{path}.ready");
    let mut p = Process::new(watch_parent, (path,));
    if p.start().is_err() {
        std::process::exit(3);
    }
    // Wait until the grandchild has looked at its live parent, say so,
    // and wait to be killed (an exit would join the grandchild first, as
    // CPython's does).
    let t = Instant::now();
    while !std::path::Path::new(&ready).exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::rename(&ready, format!("{ready}.seen"));
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::test]
fn checklist_13_parent_is_alive_turns_false_when_it_dies() -> mproc::Result<()> {
    let path = std::env::temp_dir().join(format!("mproc-test-parent-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut p = Process::new(
        start_watcher_and_vanish,
        (path.to_string_lossy().into_owned(),),
    );
    p.start()?;
    let seen = format!("{}.ready.seen", path.to_string_lossy());
    let t = Instant::now();
    while !std::path::Path::new(&seen).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the grandchild never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&seen);
    // The parent dies outright, without joining its child.
    p.kill()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(-9));
    let t = Instant::now();
    let report = loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.is_empty() {
                break s;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the grandchild never reported"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(report, "true false");
    Ok(())
}
