//! A test binary, or a program, whose test or `main` fails while a child
//! it started blocks (on a queue nobody feeds, on a full queue, in a pool
//! task). Each case runs as a whole process, with a generous deadline
//! that turns a hang into a failure naming it:
//!
//! * a failing `#[mproc::test]` (panic, `Err`, with a `Pool`, or a
//!   `#[should_panic]` one) ends: the children it started and left
//!   running are terminated, each named on stderr, and libtest reports it;
//! * tests running side by side only touch their own children: a passing
//!   test's child, un-joined, runs to its end; a child that a failing
//!   test started on another thread is terminated at exit;
//! * a failing `#[mproc::main]` keeps CPython's behaviour — it waits for
//!   its non-daemonic child at exit — and names it on stderr first;
//! * a process whose puts are still buffered for a queue whose owner is
//!   stopped waits at exit (as CPython's feeder join does), and exits once
//!   that owner is gone.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use mproc::{Pool, Process, Queue};

#[path = "common/sys/mod.rs"]
mod sys;

#[path = "common/launch.rs"]
mod launch;

const FAILING_MAIN: &str = env!("CARGO_BIN_EXE_mproc-failing-main");

/// Set for the helper tests run by the tests below: without it (a person
/// running `--ignored`), a helper passes at once.
const HELPER: &str = "MPROC_EXIT_AFTER_FAILURE_HELPER";

/// How long a helper may take: a bound on a hang, not a speed.
const LIMIT: Duration = Duration::from_secs(60);

fn helper() -> bool {
    std::env::var_os(HELPER).is_some()
}

#[mproc::target]
fn get_one(q: Queue<u32>) {
    let _ = q.get();
}

#[mproc::target]
fn put_one(q: Queue<u32>) {
    let _ = q.put(2);
}

#[mproc::target]
fn get_one_then_write(q: Queue<u32>, path: String) {
    if q.get().is_ok() {
        std::fs::write(path, b"done").expect("write the file");
    }
}

/// Runs the ignored tests that `filter` selects (exactly, unless
/// `threads` > 1) in a test process of their own; its status and output.
fn run_helpers(
    filter: &str,
    threads: usize,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let threads = format!("--test-threads={threads}");
    let mut args = vec!["--ignored", filter, &threads];
    if threads == "--test-threads=1" {
        args.push("--exact");
    }
    let mut env = env.to_vec();
    env.push((HELPER, "1"));
    let (status, text, _) = launch::run_to_end(filter, &args, &env, LIMIT);
    (status, text)
}

/// Whether libtest's `text` lists `test` among the failures (its
/// "test <name> ... FAILED" line may have an mproc line inside).
fn failed(text: &str, test: &str) -> bool {
    text.contains(&format!("failures:\n    {test}\n"))
}

/// The pids of the children `text` says were terminated because `why`,
/// with the process name `name`; each is gone.
fn terminated(text: &str, why: &str, name: &str) -> Vec<u32> {
    let head = format!("mproc: {why}; terminating Process {name} (pid ");
    let pids: Vec<u32> = text
        .lines()
        // libtest prints "test <name> ... " before the test ends.
        .filter_map(|l| l.find(&head).map(|at| &l[at + head.len()..]))
        .map(|rest| {
            let pid = rest.split(')').next().unwrap_or_default();
            pid.parse().unwrap_or_else(|_| panic!("a pid in {rest:?}"))
        })
        .collect();
    for &pid in &pids {
        if !sys::os_pid_gone(pid) {
            sys::kill_from_outside(pid);
            panic!("the terminated child {pid} outlived its test process: {text}");
        }
    }
    pids
}

// ---------------------------------------------------------------------
// A failing test ends.

#[mproc::test]
#[ignore = "a helper, run by a_failing_test_terminates_its_blocked_child"]
fn helper_panics_with_a_blocked_getter() {
    if !helper() {
        return;
    }
    let q = Queue::<u32>::new(0).unwrap();
    let mut p = Process::new(get_one, (q.clone(),)).with_name("p1");
    p.start().unwrap();
    assert_eq!(1 + 1, 3, "the test's own assertion fails");
}

/// The test binary ends, reports the failure and names the child it
/// terminated (before, it waited for that child forever at exit).
#[test]
fn a_failing_test_terminates_its_blocked_child() {
    let name = "helper_panics_with_a_blocked_getter";
    let (status, text) = run_helpers(name, 1, &[]);
    assert!(!status.success(), "{status}: {text}");
    assert!(failed(&text, name), "{text}");
    assert!(text.contains("the test's own assertion fails"), "{text}");
    let why = format!("test {name} failed (panicked)");
    assert_eq!(terminated(&text, &why, "p1").len(), 1, "{text}");
}

#[mproc::test]
#[ignore = "a helper, run by a_test_returning_err_terminates_its_blocked_child"]
fn helper_returns_err_with_a_blocked_putter() -> Result<(), String> {
    if !helper() {
        return Ok(());
    }
    let q = Queue::<u32>::new(1).map_err(|e| e.to_string())?;
    q.put(1).map_err(|e| e.to_string())?;
    // Blocks: the queue is full and nobody gets.
    let h = mproc::spawn(put_one, (q.clone(),)).map_err(|e| e.to_string())?;
    Err(format!(
        "the test's own error; its child is pid {}",
        h.pid()
    ))
}

/// The same for a test returning `Err` and a child of `mproc::spawn`
/// blocked in `put` on a full queue.
#[test]
fn a_test_returning_err_terminates_its_blocked_child() {
    let name = "helper_returns_err_with_a_blocked_putter";
    let (status, text) = run_helpers(name, 1, &[]);
    assert!(!status.success(), "{status}: {text}");
    assert!(failed(&text, name), "{text}");
    assert!(text.contains("the test's own error"), "{text}");
    let why = format!("test {name} failed (returned Err)");
    let pids = terminated(&text, &why, "Process-1");
    assert_eq!(pids.len(), 1, "{text}");
    assert!(
        text.contains(&format!("its child is pid {}", pids[0])),
        "{text}"
    );
}

#[mproc::test]
#[ignore = "a helper, run by a_child_started_on_another_thread_is_terminated_at_exit"]
fn helper_fails_with_a_blocked_child_of_another_thread() {
    if !helper() {
        return;
    }
    let q = Queue::<u32>::new(0).unwrap();
    let q2 = q.clone();
    // Started on a thread of the test's: not the test's own thread.
    let pid = std::thread::spawn(move || {
        let mut p = Process::new(get_one, (q2,)).with_name("t1");
        p.start().unwrap();
        p.pid()
    })
    .join()
    .unwrap();
    panic!("the test's own panic; its thread's child is pid {pid:?}");
}

/// A child that a failing test started on another thread is not the
/// test's (tests are told apart by their thread): the exit procedure
/// terminates it, since a test failed, instead of waiting for it.
#[test]
fn a_child_started_on_another_thread_is_terminated_at_exit() {
    let name = "helper_fails_with_a_blocked_child_of_another_thread";
    let (status, text) = run_helpers(name, 1, &[]);
    assert!(!status.success(), "{status}: {text}");
    assert!(failed(&text, name), "{text}");
    let pids = terminated(&text, "exiting after 1 failed test", "t1");
    assert_eq!(pids.len(), 1, "{text}");
    assert!(
        text.contains(&format!("its thread's child is pid Some({})", pids[0])),
        "{text}"
    );
    assert!(text.contains("started on a thread of no test"), "{text}");
}

#[mproc::test]
#[ignore = "a helper, run by a_failing_test_with_a_busy_pool_ends"]
fn helper_panics_with_a_busy_pool() {
    if !helper() {
        return;
    }
    let q = Queue::<u32>::new(0).unwrap();
    let pool = Pool::new(1).unwrap();
    let _blocked = pool.apply_async(get_one, (q.clone(),)).unwrap();
    panic!("the test's own panic, its pool busy");
}

/// A pool whose worker blocks in a task, neither closed nor joined when
/// its test fails: the test binary ends (the pool is dropped, which
/// terminates it, as CPython's `with Pool()` does).
#[test]
fn a_failing_test_with_a_busy_pool_ends() {
    let name = "helper_panics_with_a_busy_pool";
    let (status, text) = run_helpers(name, 1, &[]);
    assert!(!status.success(), "{status}: {text}");
    assert!(failed(&text, name), "{text}");
    assert!(text.contains("its pool busy"), "{text}");
}

#[mproc::test]
#[ignore = "a helper, run by a_should_panic_test_terminates_its_blocked_child"]
#[should_panic(expected = "the test's own expected panic")]
fn helper_should_panic_with_a_blocked_getter() {
    if helper() {
        let q = Queue::<u32>::new(0).unwrap();
        let mut p = Process::new(get_one, (q.clone(),)).with_name("p1");
        p.start().unwrap();
    }
    panic!("the test's own expected panic");
}

/// A `#[should_panic]` test passes by panicking; the child it left
/// blocked is terminated all the same, or the binary would never end.
#[test]
fn a_should_panic_test_terminates_its_blocked_child() {
    let name = "helper_should_panic_with_a_blocked_getter";
    let (status, text) = run_helpers(name, 1, &[]);
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("1 passed"), "{text}");
    let why = format!("test {name} panicked (#[should_panic])");
    assert_eq!(terminated(&text, &why, "p1").len(), 1, "{text}");
}

// ---------------------------------------------------------------------
// Tests side by side: each touches its own children only.

/// The pid of `pair_b`'s child, once it runs.
static PAIR_B_CHILD: (Mutex<Option<u32>>, Condvar) = (Mutex::new(None), Condvar::new());

#[mproc::test]
#[ignore = "a helper, run by a_failing_test_leaves_the_children_of_others_alone"]
fn pair_a_passes_and_keeps_its_child() -> mproc::Result<()> {
    if !helper() {
        return Ok(());
    }
    let path = std::env::var("MPROC_EXIT_PATH").expect("the file to write");
    let q = Queue::<u32>::new(0)?;
    let mut a = Process::new(get_one_then_write, (q.clone(), path)).with_name("a1");
    a.start()?;
    let b_pid = {
        let (lock, ready) = &PAIR_B_CHILD;
        let guard = lock.lock().unwrap();
        let (guard, _) = ready
            .wait_timeout_while(guard, LIMIT, |pid| pid.is_none())
            .unwrap();
        guard.expect("pair_b started its child")
    };
    // pair_b's child blocks until pair_b's failure terminates it.
    let b = mproc::active_children()
        .into_iter()
        .find(|c| c.pid() == Some(b_pid));
    if let Some(mut b) = b {
        b.join_timeout(LIMIT)?;
        assert!(!b.is_alive()?, "pair_b's child runs on after pair_b failed");
    }
    assert!(a.is_alive()?, "pair_b's failure ended pair_a's child");
    q.put(1)?;
    // No join: the exit procedure joins a1, which writes the file.
    Ok(())
}

#[mproc::test]
#[ignore = "a helper, run by a_failing_test_leaves_the_children_of_others_alone"]
fn pair_b_fails_with_a_blocked_child() {
    if !helper() {
        return;
    }
    let q = Queue::<u32>::new(0).unwrap();
    let mut b = Process::new(get_one, (q.clone(),)).with_name("b1");
    b.start().unwrap();
    let (lock, ready) = &PAIR_B_CHILD;
    *lock.lock().unwrap() = b.pid();
    ready.notify_all();
    panic!("pair_b's own failure");
}

/// Two tests on two threads of one test binary: `pair_b` fails, and only
/// its child is terminated; `pair_a`'s child, still blocked then, is
/// untouched, and — un-joined by its passing test — runs to its end
/// before the binary exits (the exit procedure joins it, as before).
#[test]
fn a_failing_test_leaves_the_children_of_others_alone() {
    let dir = std::env::temp_dir().join(format!(
        "mproc-exit-after-failure-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join("a1-done");
    let path_text = path.to_string_lossy().into_owned();
    let (status, text) = run_helpers("pair_", 2, &[("MPROC_EXIT_PATH", &path_text)]);
    let written = path.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "{status}: {text}");
    assert!(text.contains("1 passed; 1 failed"), "{text}");
    assert!(failed(&text, "pair_b_fails_with_a_blocked_child"), "{text}");
    let why = "test pair_b_fails_with_a_blocked_child failed (panicked)";
    assert_eq!(terminated(&text, why, "b1").len(), 1, "{text}");
    assert!(!text.contains("terminating Process a1"), "{text}");
    assert!(written, "pair_a's child did not run to its end: {text}");
}

// ---------------------------------------------------------------------
// A failing main waits, as CPython does, and says for which child.

/// Runs `mproc-failing-main how`: once its child is started and the exit
/// procedure names it, the program still runs (it waits for the child);
/// the child is killed from outside, and the program then exits with
/// `code`.
fn failing_main_waits_for_its_child(how: &str, code: i32) {
    let mut program = sys::spawn_command(
        Command::new(FAILING_MAIN)
            .arg(how)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("run mproc-failing-main");
    let stdout = program.stdout.take().expect("its stdout");
    let stderr = program.stderr.take().expect("its stderr");
    let (lines, read) = std::sync::mpsc::channel();
    let out_lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_lines.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut child = None;
    let mut named = false;
    while !(child.is_some() && named) {
        let Ok(line) = read.recv_timeout(LIMIT) else {
            let _ = program.kill();
            if let Some(pid) = child {
                sys::kill_from_outside(pid);
            }
            panic!("mproc-failing-main {how}: no more output for {LIMIT:?}: {seen:#?}");
        };
        if let Some(pid) = line.strip_prefix("started ") {
            child = pid.parse::<u32>().ok();
        }
        seen.push(line);
        // stdout and stderr come in any order.
        if let Some(pid) = child {
            let note = format!(
                "mproc: main {}; waiting at exit for Process p1 (pid {pid})",
                if how == "panic" {
                    "panicked"
                } else {
                    "returned Err"
                }
            );
            named = seen.iter().any(|l| l.starts_with(&note));
        }
    }
    let child = child.expect("the child's pid");
    // The child blocks until killed: the program still waits for it.
    let still_runs = program.try_wait().expect("the program's status").is_none();
    sys::kill_from_outside(child);
    assert!(
        still_runs,
        "the program did not wait for its child: {seen:#?}"
    );
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(program.wait().expect("the program's status")));
    let Ok(status) = ended.recv_timeout(LIMIT) else {
        panic!("mproc-failing-main {how} still runs {LIMIT:?} after its child was killed");
    };
    assert_eq!(status.code(), Some(code), "{seen:#?}");
}

#[test]
fn a_panicking_main_waits_for_its_child_and_names_it() {
    failing_main_waits_for_its_child("panic", 101);
}

#[test]
fn a_main_returning_err_waits_for_its_child_and_names_it() {
    failing_main_waits_for_its_child("err", 1);
}

// ---------------------------------------------------------------------
// Puts buffered for an owner that goes away.

/// Owns a queue, hands it out, then waits for an item that never comes
/// (until killed).
#[mproc::target]
fn own_a_queue(back: Queue<Queue<Vec<u8>>>) {
    let q = Queue::<Vec<u8>>::new(0).expect("a queue");
    back.put(q.clone()).expect("hand the queue out");
    let never = Queue::<u32>::new(0).expect("a queue");
    let _ = never.get();
}

#[mproc::test]
#[ignore = "a helper, run by puts_buffered_for_a_stopped_owner_wait_at_exit_until_it_is_gone"]
fn helper_exits_with_puts_buffered_for_a_stopped_owner() -> mproc::Result<()> {
    if !helper() {
        return Ok(());
    }
    let back = Queue::<Queue<Vec<u8>>>::new(0)?;
    let mut owner = Process::new(own_a_queue, (back.clone(),)).with_name("owner");
    owner.start()?;
    let q = back.get_timeout(LIMIT)?;
    // One round trip: this process's streams to the owner are open.
    q.put(vec![1])?;
    assert_eq!(q.get_timeout(LIMIT)?, [1]);
    let pid = owner.pid().expect("a started child has a pid");
    let stopped = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(stopped.success(), "kill -STOP {pid}");
    // Buffered: an unbounded queue's put returns at once (small items,
    // inline: a large one would first open the stream its object's
    // descriptor travels on, which the stopped owner cannot answer).
    for _ in 0..8 {
        q.put(vec![7; 1024])?;
    }
    // On a line of its own: libtest's "test … " precedes it.
    println!("\nowner-pid {pid}");
    // Kept to the exit, as a handle in a static would be (dropping the
    // last handle would wait here, in the test, for the items to be
    // stored). No join: the exit procedure joins the owner after the
    // hand-over, which waits until the owner has stored the items.
    std::mem::forget(q);
    Ok(())
}

/// A test process whose last test put items to a queue whose owner it
/// then left SIGSTOPped: at exit it waits for the owner to store them
/// (the hand-over, like CPython's feeder join), and once the owner is
/// killed it exits, successfully — a dead broker ends the wait. Unix:
/// Windows has no SIGSTOP.
#[test]
fn puts_buffered_for_a_stopped_owner_wait_at_exit_until_it_is_gone() {
    if std::env::consts::FAMILY != "unix" {
        eprintln!("skipped: Windows has no SIGSTOP");
        return;
    }
    let name = "helper_exits_with_puts_buffered_for_a_stopped_owner";
    let mut program = sys::spawn_command(
        Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--ignored",
                "--exact",
                name,
                "--test-threads=1",
                "--nocapture",
            ])
            .env(HELPER, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("run this test binary");
    let stdout = program.stdout.take().expect("its stdout");
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut owner = None;
    while !seen.iter().any(|l: &String| l.starts_with("test result:")) {
        let Ok(line) = read.recv_timeout(LIMIT) else {
            let _ = program.kill();
            if let Some(pid) = owner {
                sys::kill_from_outside(pid);
            }
            panic!("{name}: no more output for {LIMIT:?}: {seen:#?}");
        };
        if let Some(pid) = line.strip_prefix("owner-pid ") {
            owner = pid.parse::<u32>().ok();
        }
        seen.push(line);
    }
    let Some(owner) = owner else {
        let _ = program.kill();
        panic!("no owner pid: {seen:#?}");
    };
    // Its tests are done; it waits at exit for the stopped owner.
    let still_runs = program.try_wait().expect("its status").is_none();
    sys::kill_from_outside(owner);
    assert!(still_runs, "it exited with its puts not stored: {seen:#?}");
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(program.wait().expect("its status")));
    let Ok(status) = ended.recv_timeout(LIMIT) else {
        panic!("{name} still runs {LIMIT:?} after the owner was killed: {seen:#?}");
    };
    assert!(status.success(), "{status}: {seen:#?}");
}
