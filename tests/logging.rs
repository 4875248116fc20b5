//! `log_to_stderr` and `set_child_initializer` (the guide's "Logging").
//! Both change the whole process, so each scenario runs the
//! fixture `src/bin/mproc-logging.rs` as a process of its own and reads
//! its captured stdout and stderr. CPython: `log_to_stderr` and the
//! `log_level`/`log_to_stderr` preparation data of spawn
//! (`_test_multiprocessing` `_TestLogging.test_enable_logging`,
//! `test_level`), and the module-level set-up spawn re-runs in children.

use std::process::{Command, Output};

use mproc::Error;

#[path = "common/sys/mod.rs"]
mod sys;

const FIXTURE: &str = env!("CARGO_BIN_EXE_mproc-logging");

fn run(scenario: &str) -> (String, String) {
    let out: Output = sys::command_output(
        Command::new(FIXTURE)
            .arg(scenario)
            // Short panic reports: the assertions read stderr.
            .env("RUST_BACKTRACE", "0"),
    )
    .expect("run the logging fixture");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{scenario}: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).collect()
}

/// test_enable_logging / test_level: a child's events reach the parent's
/// stderr in CPython's `[LEVEL/ProcessName] message` format, at the level
/// set in the parent and above; so do this process's and a grandchild's.
#[test]
fn child_events_reach_stderr_with_the_process_name() {
    let (stdout, stderr) = run("log");
    let got = lines(&stderr);
    for want in [
        "[INFO/MainProcess] in main",
        "[ERROR/Process-1] e x",
        "[WARNING/Process-1] w x",
        "[INFO/Process-1] i x n=3",
        "[INFO/Process-1:1] grand",
    ] {
        assert!(got.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    for below in ["main debug", "d x", "t x"] {
        assert!(
            !stderr.contains(below),
            "{below:?} is below INFO:\n{stderr}"
        );
    }
    assert!(stdout.contains("exitcode Some(0)"), "{stdout}");
}

/// The switch and the level travel with each launch: a child started
/// before `log_to_stderr` logs nothing, one started at WARN drops INFO, a
/// later call lowers the level for the next child.
#[test]
fn the_level_in_force_at_start_is_the_childs() {
    let (stdout, stderr) = run("log-later");
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("last child "))
        .expect("the last child's pid");
    let from_child: Vec<_> = lines(&stderr)
        .into_iter()
        .filter(|l| l.ends_with("from the child"))
        .collect();
    assert_eq!(
        from_child,
        ["[INFO/Process-3] from the child"],
        "pid {pid}, stderr:\n{stderr}"
    );
}

/// A program that installed its own global subscriber: `log_to_stderr`
/// does not panic, that subscriber keeps this process's events, and
/// children (whose `main` never ran) still log through mproc's.
#[test]
fn an_existing_global_subscriber_is_left_in_charge() {
    let (stdout, stderr) = run("preinstalled");
    assert!(stdout.contains("done"), "{stdout}");
    assert!(!stderr.contains("in main"), "{stderr}");
    assert!(
        lines(&stderr).contains(&"[INFO/Process-1] from the child"),
        "{stderr}"
    );
}

/// The child initializer runs before the target in a Process, a spawned
/// child and that child's own child, a Pool worker (before the Pool's
/// initializer); a second call replaces it; the parent never runs it.
#[test]
fn the_child_initializer_runs_first_everywhere() {
    let (stdout, stderr) = run("init-order");
    let got = lines(&stdout);
    for want in [
        "process: child-init,target",
        "spawn: child-init,target / child-init,target",
        "pool: child-init,pool-init,task",
        "replaced: second,target",
        "main:",
    ] {
        assert!(
            got.contains(&want),
            "missing {want:?} in:\n{stdout}\n{stderr}"
        );
    }
}

fn check_failing_initializer(scenario: &str, reason: &str) {
    let (stdout, stderr) = run(scenario);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in:\n{stdout}\n{stderr}"))
            .to_string()
    };
    for name in ["process join: ", "spawn join: ", "pool apply: "] {
        let line = field(name);
        assert!(
            line.starts_with("Err(") && line.contains("failed to start") && line.contains(reason),
            "{name}{line}"
        );
    }
    assert_eq!(
        field("process exitcode: "),
        format!("Some({})", mproc::BOOTSTRAP_EXIT_CODE)
    );
    assert!(!stdout.contains("target"), "a target ran:\n{stdout}");
    assert!(stderr.contains("cannot start"), "{stderr}");
}

/// A panicking initializer: the child does not start, and `join` (of a
/// Process, of a spawn handle, a Pool's task) says why.
#[test]
fn a_panicking_child_initializer_fails_the_start() {
    check_failing_initializer(
        "init-panics",
        "the child initializer panicked at src/bin/mproc-logging.rs",
    );
}

/// An initializer returning `Err`: the same, with its error.
#[test]
fn a_child_initializer_returning_err_fails_the_start() {
    check_failing_initializer(
        "init-fails",
        "the child initializer returned an error: no config",
    );
}

fn not_registered(_: u32) {}

#[mproc::target]
fn takes_a_connection(_c: mproc::Connection) {}

/// Misuse: an unregistered fn, a closure, or arguments carrying a handle
/// (an initializer runs in every child; a handle can go to one) are
/// refused at the call, and nothing is set.
#[mproc::test]
fn misuse_of_set_child_initializer_is_refused() {
    assert!(matches!(
        mproc::set_child_initializer(not_registered, (1,)),
        Err(Error::UnregisteredTarget { .. })
    ));
    assert!(matches!(
        mproc::set_child_initializer(|| {}, ()),
        Err(Error::ClosureTarget { .. } | Error::UnregisteredTarget { .. })
    ));
    let (a, _b) = mproc::pipe(true).expect("pipe");
    assert!(matches!(
        mproc::set_child_initializer(takes_a_connection, (a,)),
        Err(Error::Encode(_))
    ));
}
