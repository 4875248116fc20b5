//! The Pool's dispatch paths: a task written by the caller straight to
//! an idle, ready worker (`apply_async` when the queue is empty), and
//! `apply` borrowing such a worker to read the answer itself, must keep every rule of the queued path — a worker that died
//! idle fails nothing, one that dies mid-task fails exactly that task,
//! `maxtasksperchild`, `terminate` and `close` — and lose no task when
//! callers race each other and the queue.

use std::time::Duration;

use mproc::{Address, Client, Error, Listener, Pool};

#[path = "common/report.rs"]
mod report;
#[path = "common/sys/mod.rs"]
mod sys;

use report::report_and_wait;

#[mproc::target]
fn sqr(x: u64) -> u64 {
    x * x
}

#[mproc::target]
fn pid_of(_x: u32) -> u32 {
    std::process::id()
}

/// Connects to `addr`, tells its pid and returns it at once, leaving a
/// thread that holds the connection open until the process ends: the
/// test sees the end of that connection when the (idle) worker died.
#[mproc::target]
fn report_and_hold(addr: Address) -> u32 {
    let pid = std::process::id();
    if let Ok(conn) = Client::connect(&addr, None) {
        let _ = conn.send(&pid);
        std::thread::spawn(move || {
            let _ = conn.recv::<u8>();
            // Keep the connection open until the process ends.
            loop {
                std::thread::park();
            }
        });
    }
    pid
}

/// A pool of one worker that has answered a task: its slot waits with an
/// idle, ready worker, the state in which a caller writes the next task
/// to the worker itself.
fn warm_pool_of_one() -> mproc::Result<Pool> {
    let pool = Pool::new(1)?;
    assert_eq!(pool.apply(sqr, (3,))?, 9);
    assert_eq!(pool.apply(sqr, (4,))?, 16);
    Ok(pool)
}

// ---- CPython checklist "a dead worker is replaced"; beyond CPython, whose
// Pool hangs: a worker killed while idle fails no task ----

#[mproc::test]
fn pool_dispatch_worker_killed_while_idle_fails_no_task() -> mproc::Result<()> {
    let pool = warm_pool_of_one()?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let pid = pool.apply(report_and_hold, (listener.address().clone(),))?;
    let conn = listener.accept()?;
    assert_eq!(conn.recv::<u32>()?, pid);
    // The worker is idle (its task returned); kill it and wait for its
    // end: the connection its thread held ends with the process.
    sys::kill_from_outside(pid);
    assert!(matches!(conn.recv::<u8>(), Err(Error::Eof)));
    // The next task must not be written to the dead worker and failed:
    // it runs in the replacement.
    assert_eq!(pool.apply(sqr, (7,))?, 49);
    let new_pid = pool.apply(pid_of, (0,))?;
    if cfg!(unix) {
        // (Windows may reuse a freed pid at once.)
        assert_ne!(new_pid, pid);
    }
    Ok(())
}

// ---- Beyond CPython: a worker dies mid-task (exact rule, chunksize 1) ----

#[mproc::test]
fn pool_dispatch_warm_worker_killed_mid_apply_fails_that_task_only() -> mproc::Result<()> {
    let pool = warm_pool_of_one()?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let victim = pool.apply_async(report_and_wait, (listener.address().clone(),))?;
    let conn = listener.accept()?;
    let pid: u32 = conn.recv()?;
    // Queued behind the victim: they must all complete in the replacement.
    let later: Vec<_> = (0..20u64)
        .map(|i| pool.apply_async(sqr, (i,)))
        .collect::<mproc::Result<_>>()?;
    sys::kill_from_outside(pid);
    match victim.get() {
        Err(Error::WorkerDied { pid: p, .. }) => assert_eq!(p, pid),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    for (i, r) in later.into_iter().enumerate() {
        assert_eq!(r.get()?, (i * i) as u64);
    }
    assert_eq!(pool.apply(sqr, (5,))?, 25);
    Ok(())
}

#[mproc::test]
fn pool_dispatch_worker_killed_during_apply_fails_that_call_only() -> mproc::Result<()> {
    // `apply` borrows the idle worker and reads the answer on the
    // caller's thread; a death there must still name the worker and its
    // exit code, and the worker must be replaced.
    let pool = warm_pool_of_one()?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let addr = listener.address().clone();
    std::thread::scope(|s| -> mproc::Result<()> {
        let caller = s.spawn(|| pool.apply(report_and_wait, (addr,)));
        let conn = listener.accept()?;
        let pid: u32 = conn.recv()?;
        sys::kill_from_outside(pid);
        match caller.join().expect("caller thread") {
            Err(Error::WorkerDied { pid: p, exitcode }) => {
                assert_eq!(p, pid);
                if cfg!(unix) {
                    assert_eq!(exitcode, -9);
                }
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        Ok(())
    })?;
    assert_eq!(pool.apply(sqr, (6,))?, 36);
    assert_eq!(pool.map(sqr, 0..10u64)?.len(), 10);
    Ok(())
}

// ---- TestPool.test_terminate, with the running task written by the
// caller ----

#[mproc::test]
fn pool_dispatch_terminate_fails_a_directly_written_task() -> mproc::Result<()> {
    let mut pool = warm_pool_of_one()?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let running = pool.apply_async(report_and_wait, (listener.address().clone(),))?;
    let conn = listener.accept()?;
    let _pid: u32 = conn.recv()?;
    pool.terminate()?;
    assert!(matches!(running.get(), Err(Error::PoolTerminated)));
    assert!(matches!(pool.apply(sqr, (1,)), Err(Error::PoolNotRunning)));
    Ok(())
}

// ---- TestPool.test_pool_worker_lifetime (maxtasksperchild) through
// apply: a worker is never written more tasks than its limit ----

#[mproc::test]
fn pool_dispatch_maxtasksperchild_holds_for_apply() -> mproc::Result<()> {
    let pool = Pool::builder().processes(1).maxtasksperchild(2).build()?;
    let pids: Vec<u32> = (0..8)
        .map(|i| pool.apply(pid_of, (i,)))
        .collect::<mproc::Result<_>>()?;
    for pid in &pids {
        assert!(
            pids.iter().filter(|p| *p == pid).count() <= 2,
            "a worker ran more than 2 tasks: {pids:?}"
        );
    }
    Ok(())
}

// ---- TestPool.test_async / test_apply from many threads: the direct
// path races the queue and other callers; no task is lost or answered
// to the wrong caller ----

#[mproc::test]
fn pool_dispatch_concurrent_callers_get_their_own_answers() -> mproc::Result<()> {
    let mut pool = Pool::new(2)?;
    std::thread::scope(|s| -> mproc::Result<()> {
        let pool = &pool;
        let callers: Vec<_> = (0..4u64)
            .map(|t| {
                s.spawn(move || -> mproc::Result<()> {
                    for i in 0..150u64 {
                        let x = t * 1000 + i;
                        if i % 3 == 0 {
                            let r = pool.apply_async(sqr, (x,))?;
                            assert_eq!(r.get_timeout(Duration::from_secs(60))?, x * x);
                        } else {
                            assert_eq!(pool.apply(sqr, (x,))?, x * x);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        // A map at the same time goes through the queue.
        let squares = pool.map(sqr, 0..2000u64)?;
        assert_eq!(squares, (0..2000u64).map(|x| x * x).collect::<Vec<_>>());
        for c in callers {
            c.join().expect("caller thread")?;
        }
        Ok(())
    })?;
    // Slots waiting with idle workers retire on close; join returns.
    pool.close();
    pool.join()?;
    Ok(())
}
