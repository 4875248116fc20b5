//! `Pool`: CPython's `_test_multiprocessing` `TestPool*` cases that apply
//! to a typed Pool, plus what CPython's Pool cannot survive (a worker
//! killed mid-task) and the mistakes a user makes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mproc::{Address, Connection, Error, Listener, Pool};

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
fn mul(a: u64, b: u64) -> u64 {
    a * b
}

#[mproc::target]
fn pid_of(_x: u32) -> u32 {
    std::process::id()
}

#[mproc::target]
fn panics_on_multiples_of_three_plus_one(x: u32) -> u32 {
    if x % 3 == 1 {
        panic!("task {x} failed");
    }
    x
}

#[mproc::target]
fn checked(x: u32) -> Result<u32, String> {
    if x == 2 {
        Err("two is not allowed".into())
    } else {
        Ok(x)
    }
}

#[mproc::target]
fn block_forever(_x: u32) -> u32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Dies on item `victim` the way `how` says; returns the item otherwise.
fn die_on(x: u32, victim: u32, how: String) -> u32 {
    if x == victim {
        match how.as_str() {
            "abort" => std::process::abort(),
            "exit" => std::process::exit(3),
            _ => sys::kill_self_hard(),
        }
    }
    x
}

static INITIALISED: AtomicU32 = AtomicU32::new(0);

#[mproc::target]
fn set_initialised(value: u32) {
    INITIALISED.store(value, Ordering::SeqCst);
}

#[mproc::target]
fn initialised(_x: u32) -> u32 {
    INITIALISED.load(Ordering::SeqCst)
}

#[mproc::target]
fn failing_initializer() {
    panic!("no database here");
}

#[mproc::target]
fn exiting_initializer() {
    std::process::exit(5);
}

#[mproc::target]
fn takes_connection(c: Connection) -> u32 {
    drop(c);
    0
}

/// A megabyte answer, bigger than any pipe buffer.
#[mproc::target]
fn megabyte(seed: u8) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![seed; 1 << 20])
}

#[mproc::target]
fn byte_sum(data: serde_bytes::ByteBuf) -> u64 {
    data.iter().map(|b| u64::from(*b)).sum()
}

fn not_registered(x: u64) -> u64 {
    x
}

/// Whether the OS still knows `pid` as a process (Unix; elsewhere only
/// mproc's own table is asked).
fn pid_gone(pid: u32) -> bool {
    let in_table = mproc::active_children()
        .iter()
        .any(|c| c.pid() == Some(pid));
    !in_table && sys::os_pid_gone(pid)
}

// ---- TestPool.test_map / test_starmap / test_apply ----

#[mproc::test]
fn pool_map_in_order_with_default_and_given_chunksize() -> mproc::Result<()> {
    let pool = Pool::new(4)?;
    assert_eq!(pool.map(sqr, [1, 2, 3])?, vec![1, 4, 9]);
    let expected: Vec<u64> = (0..100).map(|x| x * x).collect();
    assert_eq!(pool.map(sqr, 0..100)?, expected);
    assert_eq!(pool.map_chunked(sqr, 0..100, 7)?, expected);
    assert_eq!(pool.map_chunked(sqr, 0..100, 1000)?, expected);
    assert_eq!(pool.map(sqr, Vec::<u64>::new())?, Vec::<u64>::new());
    Ok(())
}

#[mproc::test]
fn pool_starmap_and_apply() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    let pairs: Vec<(u64, u64)> = (0..10).map(|i| (i, i + 1)).collect();
    let expected: Vec<u64> = pairs.iter().map(|(a, b)| a * b).collect();
    assert_eq!(pool.starmap(mul, pairs.clone())?, expected);
    assert_eq!(pool.starmap_chunked(mul, pairs.clone(), 3)?, expected);
    assert_eq!(pool.starmap_async(mul, pairs.clone())?.get()?, expected);
    assert_eq!(pool.starmap_async_chunked(mul, pairs, 4)?.get()?, expected);
    assert_eq!(pool.apply(sqr, (5,))?, 25);
    assert_eq!(pool.apply(mul, (6, 7))?, 42);
    Ok(())
}

// ---- TestPool.test_async / test_map_async / test_async_timeout ----

#[mproc::test]
fn pool_async_results() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    let r = pool.apply_async(sqr, (7,))?;
    r.wait();
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert_eq!(r.get_timeout(Duration::ZERO)?, 49);
    assert_eq!(r.get_timeout(Duration::ZERO)?, 49, "the value stays");
    assert_eq!(r.get()?, 49);
    let m = pool.map_async(sqr, 0..10)?;
    assert_eq!(m.get()?, (0..10).map(|x| x * x).collect::<Vec<u64>>());
    let m = pool.map_async_chunked(sqr, 0..10, 3)?;
    assert_eq!(m.get()?.len(), 10);
    Ok(())
}

#[mproc::test]
fn pool_async_timeout_then_value() -> mproc::Result<()> {
    let pool = Pool::new(1)?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let r = pool.apply_async(report_and_wait, (listener.address().clone(),))?;
    let conn = listener.accept()?;
    let pid: u32 = conn.recv()?;
    // The task is running and waits for us: not ready, whatever the wait.
    assert!(matches!(
        r.get_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(!r.wait_timeout(Duration::from_millis(10)));
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    conn.send(&1u8)?;
    assert!(r.wait_timeout(Duration::from_secs(120)));
    assert_eq!(r.successful(), Some(true));
    assert_eq!(r.get_timeout(Duration::ZERO)?, pid);
    assert_eq!(r.get()?, pid);
    Ok(())
}

// ---- TestPool.test_imap / test_imap_unordered ----

#[mproc::test]
fn pool_imap_in_order() -> mproc::Result<()> {
    let pool = Pool::new(3)?;
    let got: Vec<u64> = pool.imap(sqr, 0..50)?.collect::<mproc::Result<_>>()?;
    assert_eq!(got, (0..50).map(|x| x * x).collect::<Vec<u64>>());
    let got: Vec<u64> = pool
        .imap_chunked(sqr, 0..1000, 100)?
        .collect::<mproc::Result<_>>()?;
    assert_eq!(got, (0..1000).map(|x| x * x).collect::<Vec<u64>>());
    assert_eq!(pool.imap(sqr, Vec::<u64>::new())?.count(), 0);
    Ok(())
}

#[mproc::test]
fn pool_imap_unordered_is_complete() -> mproc::Result<()> {
    let pool = Pool::new(3)?;
    let mut got: Vec<u64> = pool
        .imap_unordered(sqr, 0..200)?
        .collect::<mproc::Result<_>>()?;
    got.sort_unstable();
    assert_eq!(got, (0..200).map(|x| x * x).collect::<Vec<u64>>());
    let mut got: Vec<u64> = pool
        .imap_unordered_chunked(sqr, 0..200, 9)?
        .collect::<mproc::Result<_>>()?;
    got.sort_unstable();
    assert_eq!(got, (0..200).map(|x| x * x).collect::<Vec<u64>>());
    Ok(())
}

#[mproc::test]
fn pool_imap_over_an_endless_iterator_is_lazy() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    let pulled = std::cell::Cell::new(0u64);
    let endless = (0u64..).inspect(|_| pulled.set(pulled.get() + 1));
    let got: Vec<u64> = pool
        .imap(sqr, endless)?
        .take(100)
        .collect::<mproc::Result<_>>()?;
    assert_eq!(got, (0..100).map(|x| x * x).collect::<Vec<u64>>());
    // A bounded number of items ahead of the consumer, never the whole input.
    assert!(pulled.get() < 100 + 100, "pulled {} items", pulled.get());
    let mut unordered = pool.imap_unordered(sqr, 0u64..)?;
    assert!(unordered.next().is_some());
    Ok(())
}

// ---- TestPool.test_map_exceptions-like: errors are per task ----

#[mproc::test]
fn pool_task_errors_are_per_task() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    // map: the lowest failing index is the error.
    match pool.map_chunked(panics_on_multiples_of_three_plus_one, 0..10, 1) {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "task 1 failed");
            assert!(location.contains("pool.rs"), "{location}");
        }
        other => panic!("expected the panic of task 1, got {other:?}"),
    }
    // imap: one Err item per failing task, the others still come.
    let items: Vec<mproc::Result<u32>> = pool
        .imap(panics_on_multiples_of_three_plus_one, 0..10)?
        .collect();
    assert_eq!(items.len(), 10);
    for (i, item) in items.iter().enumerate() {
        match item {
            Ok(v) => assert_eq!(*v as usize, i),
            Err(Error::Panicked { message, .. }) => {
                assert_eq!(i % 3, 1);
                assert_eq!(message, &format!("task {i} failed"));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // A Result target's Err is a value, as spawn's.
    assert_eq!(
        pool.map(checked, 0..4)?,
        vec![Ok(0), Ok(1), Err("two is not allowed".into()), Ok(3)]
    );
    let r = pool.apply_async(panics_on_multiples_of_three_plus_one, (4,))?;
    r.wait();
    assert_eq!(r.successful(), Some(false));
    assert!(matches!(r.get(), Err(Error::Panicked { .. })));
    // The pool still works after every failure.
    assert_eq!(pool.apply(sqr, (3,))?, 9);
    Ok(())
}

// ---- Beyond CPython: a worker dies mid-task ----

#[mproc::target]
fn die_on_tuple(item: (u32, u32, String)) -> u32 {
    die_on(item.0, item.1, item.2)
}

#[mproc::test]
fn pool_worker_aborting_mid_task_fails_that_task_only() -> mproc::Result<()> {
    check_death_starmap("abort")
}

#[mproc::test]
fn pool_worker_exiting_mid_task_fails_that_task_only() -> mproc::Result<()> {
    check_death_starmap("exit")
}

#[mproc::test]
fn pool_worker_sigkilled_mid_task_fails_that_task_only() -> mproc::Result<()> {
    check_death_starmap("kill")
}

fn check_death_starmap(how: &str) -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    let items = (0..20).map(|x| (x, 7, how.to_string()));
    let got: Vec<mproc::Result<u32>> = pool.imap(die_on_tuple, items)?.collect();
    assert_eq!(got.len(), 20);
    for (i, item) in got.into_iter().enumerate() {
        if i == 7 {
            match item {
                Err(Error::WorkerDied { pid, exitcode }) => {
                    assert_ne!(exitcode, 0, "{how}");
                    if how == "kill" && cfg!(unix) {
                        assert_eq!(exitcode, -9);
                    }
                    if how == "exit" {
                        assert_eq!(exitcode, 3);
                    }
                    let text = Error::WorkerDied { pid, exitcode }.to_string();
                    assert_eq!(
                        text,
                        format!("worker process {pid} died (exit code {exitcode}) while running this task")
                    );
                }
                other => panic!("task 7 ({how}): expected WorkerDied, got {other:?}"),
            }
        } else {
            assert_eq!(item?, i as u32, "{how}");
        }
    }
    // map: the same death is map's error; the pool goes on.
    match pool.map_chunked(die_on_tuple, (0..6).map(|x| (x, 3, how.to_string())), 1) {
        Err(Error::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(pool.map(sqr, 0..10)?.len(), 10);
    Ok(())
}

#[mproc::test]
fn pool_worker_killed_from_outside_fails_its_task_and_is_replaced() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let victim = pool.apply_async(report_and_wait, (listener.address().clone(),))?;
    let conn = listener.accept()?;
    let pid: u32 = conn.recv()?;
    let others = pool.map_async(sqr, 0..50)?;
    sys::kill_from_outside(pid);
    match victim.get() {
        Err(Error::WorkerDied { pid: p, exitcode }) => {
            assert_eq!(p, pid);
            // `kill -9`: -9. Wine's `taskkill /F` ends the process with
            // exit code 0: the death is still this task's error, which
            // is what counts (a worker never ends by itself mid-task).
            if cfg!(unix) {
                assert_eq!(exitcode, -9);
            }
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(others.get()?.len(), 50);
    // The replacement serves new tasks; the victim's pid is gone.
    let pids = pool.map_chunked(pid_of, 0..20, 1)?;
    assert_eq!(pids.len(), 20);
    if cfg!(unix) {
        // (Windows may reuse a freed pid at once, even for the new worker.)
        assert!(!pids.contains(&pid));
        assert!(pid_gone(pid));
    }
    Ok(())
}

// ---- TestPool.test_terminate / test_empty_iterable / close-join order ----

#[mproc::test]
fn pool_terminate_while_tasks_run_leaves_no_process() -> mproc::Result<()> {
    let mut pool = Pool::new(2)?;
    let listener = Listener::bind(Address::unique_local(), None)?;
    let a = pool.apply_async(report_and_wait, (listener.address().clone(),))?;
    let b = pool.apply_async(report_and_wait, (listener.address().clone(),))?;
    let queued = pool.map_async(block_forever, 0..10)?;
    let (ca, cb) = (listener.accept()?, listener.accept()?);
    let pids: [u32; 2] = [ca.recv()?, cb.recv()?];
    pool.terminate()?;
    for pid in pids {
        assert!(pid_gone(pid), "worker {pid} still there");
    }
    assert!(matches!(a.get(), Err(Error::PoolTerminated)));
    assert!(matches!(b.get(), Err(Error::PoolTerminated)));
    assert!(matches!(queued.get(), Err(Error::PoolTerminated)));
    assert!(matches!(pool.apply(sqr, (1,)), Err(Error::PoolNotRunning)));
    pool.join()?;
    Ok(())
}

#[mproc::test]
fn pool_close_then_join_finishes_queued_tasks() -> mproc::Result<()> {
    let mut pool = Pool::new(2)?;
    assert!(matches!(pool.join(), Err(Error::PoolStillRunning)));
    assert_eq!(Error::PoolStillRunning.to_string(), "Pool is still running");
    let r = pool.map_async(sqr, 0..100)?;
    pool.close();
    match pool.apply(sqr, (2,)) {
        Err(e @ Error::PoolNotRunning) => assert_eq!(e.to_string(), "Pool not running"),
        other => panic!("expected PoolNotRunning, got {other:?}"),
    }
    assert!(matches!(pool.map(sqr, 0..3), Err(Error::PoolNotRunning)));
    assert!(pool.imap(sqr, 0..3).is_err());
    pool.join()?;
    assert!(r.ready());
    assert_eq!(r.get()?.len(), 100);
    pool.terminate()?;
    Ok(())
}

#[mproc::test]
fn pool_dropped_pool_fails_pending_results_and_does_not_hang_in_a_panic() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    let r = pool.apply_async(block_forever, (0,))?;
    drop(pool);
    assert!(matches!(r.get(), Err(Error::PoolTerminated)));

    let unwound = std::panic::catch_unwind(|| {
        let pool = Pool::new(2).expect("pool");
        let _pending = pool.map_async(block_forever, 0..4).expect("map_async");
        panic!("user code panics with a busy pool");
    });
    assert!(unwound.is_err());
    Ok(())
}

// ---- User mistakes ----

#[mproc::test]
fn pool_mistakes_are_clear_errors() -> mproc::Result<()> {
    match Pool::new(0) {
        Err(e @ Error::PoolSize) => {
            assert_eq!(e.to_string(), "Number of processes must be at least 1")
        }
        other => panic!("expected PoolSize, got {other:?}"),
    }
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(Error::PoolMaxTasks)
    ));
    let pool = Pool::new(1)?;
    match pool.map(not_registered, 0..3) {
        Err(Error::UnregisteredTarget { short, .. }) => assert_eq!(short, "not_registered"),
        other => panic!("expected UnregisteredTarget, got {other:?}"),
    }
    assert!(matches!(
        pool.apply_async(not_registered, (1,)),
        Err(Error::UnregisteredTarget { .. })
    ));
    assert!(matches!(
        pool.map_chunked(sqr, 0..3, 0),
        Err(Error::PoolChunksize)
    ));
    assert!(matches!(
        pool.imap_chunked(sqr, 0..3, 0).map(|_| ()),
        Err(Error::PoolChunksize)
    ));
    // CPython refuses to pickle a Connection for a Pool task too.
    let (a, _b) = mproc::pipe(true)?;
    assert!(matches!(
        pool.apply(takes_connection, (a,)),
        Err(Error::Encode(_))
    ));
    assert!(matches!(
        Pool::builder()
            .processes(1)
            .initializer(not_registered_init, ())
            .build(),
        Err(Error::UnregisteredTarget { .. })
    ));
    assert_eq!(pool.apply(sqr, (4,))?, 16);
    Ok(())
}

fn not_registered_init() {}

// ---- Big arguments and answers: no deadlock between pool and worker ----

#[mproc::test]
fn pool_megabyte_arguments_and_answers_pass_in_both_directions() -> mproc::Result<()> {
    let pool = Pool::new(2)?;
    // Many tasks in flight, each answer larger than a pipe buffer.
    let answers = pool.map_chunked(megabyte, 0..24u8, 1)?;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.len(), 1 << 20);
        assert!(a.iter().all(|b| *b as usize == i));
    }
    // Arguments larger than a pipe buffer, several queued at once.
    let big: Vec<serde_bytes::ByteBuf> = (0..6u8)
        .map(|i| serde_bytes::ByteBuf::from(vec![i; 3 << 20]))
        .collect();
    let sums = pool.map_chunked(byte_sum, big, 1)?;
    assert_eq!(sums, (0..6u64).map(|i| i * (3 << 20)).collect::<Vec<_>>());
    Ok(())
}

// ---- TestPool.test_pool_worker_lifetime / TestInitializers ----

#[mproc::test]
fn pool_maxtasksperchild_replaces_workers() -> mproc::Result<()> {
    let pool = Pool::builder().processes(2).maxtasksperchild(2).build()?;
    let pids = pool.map_chunked(pid_of, 0..20, 1)?;
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // 20 tasks of one item, at most 2 per worker: at least 10 workers.
    // Windows (and Wine) may give a new process a pid just freed, so
    // there only "more pids than workers" is certain.
    if cfg!(unix) {
        assert!(distinct.len() >= 10, "{} workers: {pids:?}", distinct.len());
        for pid in distinct {
            assert!(pids.iter().filter(|p| **p == pid).count() <= 2);
        }
    } else {
        assert!(distinct.len() > 2, "{} workers: {pids:?}", distinct.len());
    }
    let expected: Vec<u64> = (0..30).map(|x| x * x).collect();
    assert_eq!(pool.map_chunked(sqr, 0..30, 1)?, expected);
    Ok(())
}

#[mproc::test]
fn pool_initializer_runs_in_every_worker() -> mproc::Result<()> {
    let pool = Pool::builder()
        .processes(2)
        .initializer(set_initialised, (42,))
        .maxtasksperchild(3)
        .build()?;
    // Replacement workers (maxtasksperchild) run it again.
    let seen = pool.map_chunked(initialised, 0..12, 1)?;
    assert_eq!(seen, vec![42; 12]);
    Ok(())
}

#[mproc::test]
fn pool_failing_initializer_breaks_the_pool_with_its_reason() -> mproc::Result<()> {
    let pool = Pool::builder()
        .processes(2)
        .initializer(failing_initializer, ())
        .build()?;
    match pool.map(sqr, 0..4) {
        Err(Error::PoolBroken(why)) => {
            assert!(why.contains("no database here"), "{why}");
        }
        other => panic!("expected PoolBroken, got {other:?}"),
    }
    assert!(matches!(pool.apply(sqr, (1,)), Err(Error::PoolBroken(_))));
    Ok(())
}

#[mproc::test]
fn pool_initializer_that_kills_its_worker_breaks_the_pool_after_retries() -> mproc::Result<()> {
    let pool = Pool::builder()
        .processes(1)
        .initializer(exiting_initializer, ())
        .build()?;
    match pool.apply(sqr, (2,)) {
        Err(Error::PoolBroken(why)) => {
            assert!(why.contains("before it was ready"), "{why}");
            assert!(why.contains("exit code 5"), "{why}");
        }
        other => panic!("expected PoolBroken, got {other:?}"),
    }
    Ok(())
}
