//! `Launcher`: the local launcher is the default and changes nothing
//! (the Pool and Process suites run with it); what a remote launcher
//! refuses before any process exists. The Slurm cluster tests are in
//! `tests/cluster.rs`.

use mproc::{Launcher, Pool, Process};

#[mproc::target]
fn double(x: u32) -> u32 {
    x * 2
}

#[mproc::target]
fn exit_with(code: i32) {
    std::process::exit(code);
}

#[mproc::target]
fn takes_connection(c: mproc::Connection) {
    let _ = c.send(&1u8);
}

/// An explicit `Launcher::local()` is the default: a Pool maps in order
/// and a Process's exit code is its own (`TestPool.test_map`,
/// `test_exitcode`).
#[mproc::test]
fn launcher_local_is_the_default() {
    assert_eq!(Launcher::default(), Launcher::local());
    assert!(!Launcher::local().args(["--ignored"]).nodes(3).is_remote());
    let pool = Pool::builder()
        .processes(2)
        .launcher(Launcher::local())
        .build()
        .unwrap();
    assert_eq!(
        pool.map(double, 0..10u32).unwrap(),
        (0..10).map(|x| x * 2).collect::<Vec<_>>()
    );
    let mut p = Process::new(exit_with, (3,)).with_launcher(Launcher::local());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(3));
}

/// A `Connection` end cannot cross hosts: a remote launcher refuses it at
/// `start()`, before any process (or srun) is started, on every OS.
#[mproc::test]
fn launcher_srun_refuses_a_connection_before_starting_anything() {
    let (_mine, theirs) = mproc::pipe(true).unwrap();
    let mut p = Process::new(takes_connection, (theirs,)).with_launcher(Launcher::srun());
    let err = p.start().unwrap_err();
    assert!(
        err.to_string().contains("cannot cross hosts"),
        "unclear error: {err}"
    );
    assert_eq!(p.pid(), None);
}

/// `--export` in the srun options would start tasks without the entry
/// token (running `main` on the node): refused at `start()`.
#[mproc::test]
fn launcher_srun_refuses_an_export_option() {
    let mut p = Process::new(exit_with, (0,))
        .with_launcher(Launcher::srun().args(["--partition=x", "--export=NONE"]));
    let err = p.start().unwrap_err();
    assert!(err.to_string().contains("--export"), "unclear error: {err}");
    assert_eq!(p.pid(), None);
}

/// `Context::launcher` (the guide's "Across machines"): a context's processes,
/// spawns and pools start through its launcher. A local one runs them
/// here; a remote one refuses a `Connection` at `start()` for each.
#[mproc::test]
fn context_launcher_applies_to_process_spawn_and_pool() {
    let ctx = mproc::get_context(mproc::StartMethod::Spawn)
        .unwrap()
        .launcher(Launcher::local());
    assert_eq!(ctx.get_launcher(), &Launcher::local());
    let mut p = ctx.process(exit_with, (4,));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(4));
    assert_eq!(ctx.spawn(double, (21,)).unwrap().join().unwrap(), 42);
    let mut pool = ctx.pool(2).unwrap();
    assert_eq!(pool.map(double, [1, 2, 3]).unwrap(), vec![2, 4, 6]);
    pool.close();
    pool.join().unwrap();

    let remote = mproc::get_context(mproc::StartMethod::Spawn)
        .unwrap()
        .launcher(Launcher::srun());
    assert!(remote.get_launcher().is_remote());
    let (_mine, theirs) = mproc::pipe(true).unwrap();
    let mut p = remote.process(takes_connection, (theirs,));
    let err = p.start().unwrap_err();
    assert!(err.to_string().contains("cannot cross hosts"), "{err}");
    let (_mine, theirs) = mproc::pipe(true).unwrap();
    let err = remote.spawn(takes_connection, (theirs,)).unwrap_err();
    assert!(err.to_string().contains("cannot cross hosts"), "{err}");
}
