//! JoinableQueue and SimpleQueue through the public API, with real child
//! processes. The cases are `_test_multiprocessing`'s
//! (`_TestQueue.test_task_done`, `test_task_done` over-calling,
//! `TestSimpleQueue.test_empty`/`test_close`), run across processes, plus
//! what CPython cannot do: a consumer killed mid-work leaves the count
//! right (the guide's "JoinableQueue and a dying consumer").

use std::time::{Duration, Instant};

use mproc::{Error, JoinableQueue, Process, SimpleQueue};

/// Takes items until `None`, marks each one done (the `None` too), and
/// reports what it took on `out`.
#[mproc::target]
fn worker(q: JoinableQueue<Option<u32>>, out: SimpleQueue<u32>) {
    while let Some(i) = q.get().expect("get") {
        out.put(i * 10).expect("report");
        q.task_done().expect("task_done");
    }
    q.task_done().expect("task_done of the stop signal");
}

/// `_TestQueue.test_task_done`: 4 workers in other processes, 10 items;
/// `join()` returns once every item is done, and only then.
#[mproc::test]
fn test_task_done_join_waits_for_every_item_across_processes() -> mproc::Result<()> {
    let q = JoinableQueue::<Option<u32>>::new(0)?;
    let out = SimpleQueue::<u32>::new()?;
    let mut workers: Vec<Process> = (0..4)
        .map(|_| Process::new(worker, (q.clone(), out.clone())))
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for i in 0..10 {
        q.put(Some(i)).map_err(Error::from)?;
    }
    q.join()?;
    // Every item's task_done came after its report: all 10 are there.
    let mut got: Vec<u32> = (0..10).map(|_| out.get()).collect::<mproc::Result<_>>()?;
    got.sort_unstable();
    assert_eq!(got, (0..10).map(|i| i * 10).collect::<Vec<_>>());
    assert!(out.empty());
    for _ in &workers {
        q.put(None).map_err(Error::from)?;
    }
    q.join()?;
    for w in &mut workers {
        w.join()?;
        assert_eq!(w.exitcode(), Some(0));
    }
    Ok(())
}

/// Puts `n` items and returns (join_thread first: nothing is lost).
#[mproc::target]
fn put_n(q: JoinableQueue<u32>, n: u32) {
    for i in 0..n {
        q.put(i).expect("put");
    }
}

/// Takes `n` items and marks each done, from another process.
#[mproc::target]
fn take_and_finish(q: JoinableQueue<u32>, n: u32) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let i = q.get().expect("get");
            q.task_done().expect("task_done");
            i
        })
        .collect()
}

/// `join()` blocks while an item is unfinished: here, the owner took an
/// item and has not marked it done; a child's `join` waits until it does.
#[mproc::target]
fn join_and_time(q: JoinableQueue<u32>, ready: SimpleQueue<u32>) -> u128 {
    ready.put(1).expect("ready");
    let t = Instant::now();
    q.join().expect("join");
    t.elapsed().as_millis()
}

#[mproc::test]
fn join_blocks_until_the_last_task_done_in_another_process() -> mproc::Result<()> {
    let q = JoinableQueue::<u32>::new(0)?;
    let ready = SimpleQueue::<u32>::new()?;
    // Items put by a child count (its puts are stored before it ends).
    let mut p = Process::new(put_n, (q.clone(), 3));
    p.start()?;
    p.join()?;
    assert_eq!(q.qsize(), 3);
    let got = mproc::spawn(take_and_finish, (q.clone(), 2))?.join()?;
    assert_eq!(got, [0, 1]);
    // One item left and not done: a child's join waits.
    let waiter = mproc::spawn(join_and_time, (q.clone(), ready.clone()))?;
    ready.get()?;
    assert_eq!(q.get()?, 2);
    // The child is still waiting: the item is taken but not done.
    waiter.join_timeout(Duration::from_millis(300))?;
    assert!(
        waiter.is_alive()?,
        "join() returned with an item unfinished"
    );
    q.task_done()?;
    let waited = waiter.join()?;
    assert!(waited >= 300, "join returned after {waited} ms");
    q.join()?;
    Ok(())
}

#[mproc::target]
fn over_call(q: JoinableQueue<u32>) -> Vec<String> {
    let mut seen = Vec::new();
    q.put(5).expect("put");
    // Its own put is counted before its task_done, whatever the order in
    // which they travel.
    // The results as text (an error's `Display`: its `Debug` is derived).
    let text = |r: mproc::Result<()>| match r {
        Ok(()) => "Ok(())".to_string(),
        Err(e) => format!("Err({e})"),
    };
    seen.push(text(q.task_done()));
    seen.push(text(q.task_done()));
    seen
}

/// `test_task_done` over-calling: one more `task_done` than items put is
/// CPython's ValueError ("task_done() called too many times"), in the
/// owner and in a child, and the count is unchanged by the refusal.
#[mproc::test]
fn task_done_called_too_many_times_is_an_error() -> mproc::Result<()> {
    let q = JoinableQueue::<u32>::new(2)?;
    let e = q.task_done().unwrap_err();
    assert!(matches!(e, Error::TaskDoneTooManyTimes), "{e:?}");
    assert_eq!(e.to_string(), "task_done() called too many times");
    q.put(1).map_err(Error::from)?;
    q.task_done()?;
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
    // In a child: its put counts, the second task_done is refused.
    let seen = mproc::spawn(over_call, (q.clone(),))?.join()?;
    assert_eq!(
        seen,
        ["Ok(())", "Err(task_done() called too many times)"],
        "{seen:?}"
    );
    // The refusal left the count at zero: join returns at once.
    q.join()?;
    assert_eq!(q.get()?, 1);
    assert_eq!(q.get()?, 5);
    q.join()?;
    Ok(())
}

/// Takes `n` items quickly (so that it receives more in advance), marks
/// all but the last done, reports them, and waits to be killed.
#[mproc::target]
fn take_n_and_hang(q: JoinableQueue<u32>, report: SimpleQueue<Vec<u32>>, n: u32) {
    let taken: Vec<u32> = (0..n).map(|_| q.get().expect("get")).collect();
    for _ in 1..n {
        q.task_done().expect("task_done");
    }
    report.put(taken).expect("report");
    std::thread::sleep(Duration::from_secs(3600));
}

#[mproc::target]
fn join_and_report(q: JoinableQueue<u32>, ready: SimpleQueue<Vec<u32>>) {
    ready.put(Vec::new()).expect("ready");
    q.join().expect("join");
}

/// A consumer killed with an item taken and not done, and items received
/// in advance: the advance items come back (still unfinished, done by the
/// next consumer); the taken one stays unfinished. `join` then returns
/// exactly when the survivors' items and that one are done — never early,
/// never counted twice.
#[mproc::test]
fn a_killed_consumer_leaves_its_items_unfinished_not_done() -> mproc::Result<()> {
    let q = JoinableQueue::<u32>::new(0)?;
    let report = SimpleQueue::<Vec<u32>>::new()?;
    for i in 0..2000 {
        q.put(i).map_err(Error::from)?;
    }
    let mut c = Process::new(take_n_and_hang, (q.clone(), report.clone(), 300));
    c.start()?;
    let taken = report.get()?;
    assert_eq!(taken, (0..300).collect::<Vec<u32>>());
    c.kill()?;
    c.join()?;
    // The other 1700 come to a new consumer, each once (the advance
    // items the killed one held among them).
    let mut rest = mproc::spawn(take_and_finish, (q.clone(), 1700))?.join()?;
    rest.sort_unstable();
    assert_eq!(rest, (300..2000).collect::<Vec<u32>>());
    assert!(q.empty());
    // The killed consumer's last taken item is the one left unfinished.
    let mut waiter = Process::new(join_and_report, (q.clone(), report.clone()));
    waiter.start()?;
    report.get()?;
    waiter.join_timeout(Duration::from_millis(200))?;
    assert!(
        waiter.is_alive()?,
        "join() returned with an item unfinished"
    );
    q.task_done()?;
    waiter.join()?;
    assert_eq!(waiter.exitcode(), Some(0));
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
    Ok(())
}

#[mproc::target]
fn simple_child(q: SimpleQueue<String>, back: SimpleQueue<String>) {
    let s = q.get().expect("get");
    back.put(format!("{s}!")).expect("put");
}

/// `TestSimpleQueue.test_empty` and `test_close`, across processes.
#[mproc::test]
fn simple_queue_put_get_empty_close() -> mproc::Result<()> {
    let q = SimpleQueue::<String>::new()?;
    let back = SimpleQueue::<String>::new()?;
    assert!(q.empty());
    q.put("hi".to_string())?;
    assert!(!q.empty());
    let mut p = Process::new(simple_child, (q.clone(), back.clone()));
    p.start()?;
    assert_eq!(back.get()?, "hi!");
    p.join()?;
    assert!(q.empty() && back.empty());
    q.close();
    assert!(matches!(q.put("x".into()), Err(Error::QueueClosed)));
    assert!(matches!(q.get(), Err(Error::QueueClosed)));
    Ok(())
}
