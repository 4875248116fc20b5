//! Locks, semaphores, events, conditions and barriers across real
//! processes (issue 16). Each test names the CPython `_test_multiprocessing`
//! case it ports (`TestLock`, `TestSemaphore`, `TestEvent`, `TestCondition`,
//! `TestBarrier`) or the robustness rule of the guide it proves (a holder's
//! death never deadlocks the others).

use std::time::Duration;

use mproc::{
    Barrier, BoundedSemaphore, Condition, Connection, Error, Event, Lock, Process, Queue, RLock,
    Semaphore, Value,
};

// ---- targets -------------------------------------------------------------

/// Takes the lock, says so, then waits (holding it) until killed.
#[mproc::target]
fn hold_lock_until_killed(lock: Lock, ready: Event, never: Event) -> mproc::Result<()> {
    let _g = lock.acquire()?;
    ready.set();
    never.wait();
    Ok(())
}

/// Takes the RLock twice, says so, then waits until killed.
#[mproc::target]
fn hold_rlock_until_killed(lock: RLock, ready: Event, never: Event) -> mproc::Result<()> {
    let _a = lock.acquire()?;
    let _b = lock.acquire()?;
    ready.set();
    never.wait();
    Ok(())
}

/// Whether the lock could be taken within 20 ms (from another process).
#[mproc::target]
fn try_lock_briefly(lock: Lock) -> Result<(bool, bool), String> {
    text(|| {
        let now = lock.try_acquire()?.is_some();
        let timed = lock.acquire_timeout(Duration::from_millis(20))?.is_some();
        Ok((now, timed))
    })
}

/// `n` increments of a shared counter under a lock that is not the
/// counter's own (a read, then a write: lost updates without the lock).
#[mproc::target]
fn add_under_lock(lock: Lock, counter: Value<u64>, n: u32) -> Result<(), String> {
    text(|| {
        for _ in 0..n {
            let _g = lock.acquire()?;
            let v = counter.get();
            counter.set(v + 1);
        }
        Ok(())
    })
}

#[mproc::target]
fn acquire_and_report(sem: Semaphore, done: Event) -> Result<u32, String> {
    text(|| {
        sem.acquire()?;
        done.set();
        Ok(sem.get_value())
    })
}

#[mproc::target]
fn release_n(sem: Semaphore, n: u32) -> Result<(), String> {
    text(|| {
        for _ in 0..n {
            sem.release()?;
        }
        Ok(())
    })
}

#[mproc::target]
fn set_event(e: Event) {
    e.set();
}

/// Waits for the event, then reports whether it was set.
#[mproc::target]
fn wait_event(e: Event, started: Semaphore) -> bool {
    let _ = started.release();
    e.wait();
    e.is_set()
}

/// Waits on the condition until notified; then releases `woken`.
#[mproc::target]
fn cond_waiter(cond: Condition, waiting: Semaphore, woken: Semaphore) -> mproc::Result<()> {
    let mut g = cond.acquire()?;
    waiting.release()?;
    g.wait()?;
    woken.release()
}

/// Waits on the condition (announcing it) until killed.
#[mproc::target]
fn cond_wait_until_killed(cond: Condition, waiting: Semaphore) -> mproc::Result<()> {
    let mut g = cond.acquire()?;
    waiting.release()?;
    loop {
        g.wait()?;
    }
}

/// Waits until the shared state reaches `target` (`wait_for`).
#[mproc::target]
fn cond_wait_for(cond: Condition, state: Value<u32>, target: u32) -> Result<u32, String> {
    text(|| {
        let mut g = cond.acquire()?;
        g.wait_for(|| state.get() >= target)?;
        Ok(state.get())
    })
}

/// Waits at the barrier; its arrival index or the error's text.
#[mproc::target]
fn barrier_party(b: Barrier) -> Result<usize, String> {
    b.wait().map_err(|e| e.to_string())
}

/// Goes round the barrier `rounds` times, appending its index each round.
#[mproc::target]
fn barrier_rounds(b: Barrier, rounds: u32) -> Result<Vec<usize>, String> {
    (0..rounds)
        .map(|_| b.wait().map_err(|e| e.to_string()))
        .collect()
}

/// Announces itself, then waits at the barrier (until killed).
#[mproc::target]
fn barrier_wait_announced(b: Barrier, arrived: Semaphore) -> Result<(), String> {
    text(|| {
        arrived.release()?;
        b.wait().map(drop)
    })
}

/// Takes a lock from a queue and an event from a connection (objects
/// that reach an already running process); reports what it sees.
#[mproc::target]
fn receive_late(q: Queue<Lock>, conn: Connection) -> Result<(bool, bool), String> {
    text(|| {
        let lock = q.get()?;
        let event: Event = conn.recv()?;
        let free = lock.try_acquire()?.is_some();
        event.set();
        Ok((free, event.is_set()))
    })
}

/// Takes a lock from a queue; the error's text if it cannot be had.
#[mproc::target]
fn get_lock(q: Queue<Lock>) -> Result<bool, String> {
    text(|| Ok(q.get()?.try_acquire()?.is_some()))
}

/// Passes the lock on to a grandchild, which reports the lock's state.
#[mproc::target]
fn via_grandchild(lock: Lock) -> Result<(bool, bool), String> {
    text(|| mproc::spawn(try_lock_briefly, (lock,))?.join())?
}

/// A target's result with the error as text (`mproc::Error` does not
/// travel back; its message does).
fn text<T>(f: impl FnOnce() -> mproc::Result<T>) -> Result<T, String> {
    f().map_err(|e| e.to_string())
}

/// A child's `Result<T, String>` as an `mproc::Result`.
fn back<T>(r: Result<T, String>) -> mproc::Result<T> {
    r.map_err(Error::TargetError)
}

// ---- Lock / RLock (TestLock) ---------------------------------------------

/// TestLock.test_lock: acquire, a second non-blocking acquire fails,
/// release, acquire again; a blocking re-acquire is an error, not a hang.
#[mproc::test]
fn test_lock_acquire_release() -> mproc::Result<()> {
    let lock = Lock::new()?;
    let g = lock.acquire()?;
    assert!(!g.previous_owner_died());
    assert!(lock.try_acquire()?.is_none());
    assert!(lock.acquire_timeout(Duration::from_millis(1))?.is_none());
    assert!(matches!(lock.acquire(), Err(Error::WouldDeadlock)));
    drop(g);
    assert!(lock.try_acquire()?.is_some());
    Ok(())
}

/// TestLock.test_rlock: the holder may acquire again; released after the
/// last guard; another process cannot take it meanwhile.
#[mproc::test]
fn test_rlock_recursion() -> mproc::Result<()> {
    let lock = RLock::new()?;
    let a = lock.acquire()?;
    let b = lock.try_acquire()?.expect("recursive try_acquire");
    let c = lock
        .acquire_timeout(Duration::from_millis(1))?
        .expect("recursive timed");
    drop((a, b));
    drop(c);
    assert!(lock.try_acquire()?.is_some());
    Ok(())
}

/// TestLock: a lock held here is seen as held by another process, and
/// free once released (the lock is one object across processes).
#[mproc::test]
fn lock_is_shared_with_a_child_and_a_grandchild() -> mproc::Result<()> {
    let lock = Lock::new()?;
    let g = lock.acquire()?;
    assert_eq!(
        mproc::spawn(try_lock_briefly, (lock.clone(),))?
            .join()
            .and_then(back)?,
        (false, false)
    );
    assert_eq!(
        mproc::spawn(via_grandchild, (lock.clone(),))?
            .join()
            .and_then(back)?,
        (false, false)
    );
    drop(g);
    assert_eq!(
        mproc::spawn(try_lock_briefly, (lock.clone(),))?
            .join()
            .and_then(back)?,
        (true, true)
    );
    assert_eq!(
        mproc::spawn(via_grandchild, (lock,))?
            .join()
            .and_then(back)?,
        (true, true)
    );
    Ok(())
}

/// Mutual exclusion: two processes doing read-then-write increments of a
/// shared counter under the lock lose no update.
#[mproc::test]
fn lock_excludes_across_processes() -> mproc::Result<()> {
    let lock = Lock::new()?;
    let counter = Value::new(0u64)?;
    let n = 2_000;
    let a = mproc::spawn(add_under_lock, (lock.clone(), counter.clone(), n))?;
    let b = mproc::spawn(add_under_lock, (lock.clone(), counter.clone(), n))?;
    a.join().and_then(back)?;
    b.join().and_then(back)?;
    assert_eq!(counter.get(), 2 * n as u64);
    Ok(())
}

/// Beyond CPython (robust-mutex rule): a holder SIGKILLed (TerminateProcess
/// on Windows) while holding the lock does not deadlock the others; the
/// next acquirer gets it and is told.
#[mproc::test]
fn lock_holder_killed_next_acquire_gets_it_and_is_told() -> mproc::Result<()> {
    let (lock, ready, never) = (Lock::new()?, Event::new()?, Event::new()?);
    let mut p = Process::new(hold_lock_until_killed, (lock.clone(), ready.clone(), never));
    p.start()?;
    ready.wait();
    assert!(lock.try_acquire()?.is_none(), "the child holds it");
    p.kill()?;
    p.join()?;
    let g = lock.acquire()?;
    assert!(g.previous_owner_died());
    drop(g);
    let g = lock.acquire()?;
    assert!(!g.previous_owner_died(), "told once, then a clean lock");
    Ok(())
}

/// The same for an RLock held recursively by the killed process.
#[mproc::test]
fn rlock_holder_killed_next_acquire_gets_it_and_is_told() -> mproc::Result<()> {
    let (lock, ready, never) = (RLock::new()?, Event::new()?, Event::new()?);
    let mut p = Process::new(
        hold_rlock_until_killed,
        (lock.clone(), ready.clone(), never),
    );
    p.start()?;
    ready.wait();
    p.kill()?;
    p.join()?;
    let g = lock
        .acquire_timeout(Duration::from_secs(30))?
        .expect("not deadlocked");
    assert!(g.previous_owner_died());
    drop(g);
    assert!(lock.try_acquire()?.is_some(), "fully released by one guard");
    Ok(())
}

// ---- Semaphore (TestSemaphore) -------------------------------------------

/// TestSemaphore.test_semaphore: counts down, non-blocking acquire fails at
/// zero, release counts up.
#[mproc::test]
fn test_semaphore_counts() -> mproc::Result<()> {
    let s = Semaphore::new(2)?;
    assert_eq!(s.get_value(), 2);
    s.acquire()?;
    assert!(s.try_acquire()?);
    assert_eq!(s.get_value(), 0);
    assert!(!s.try_acquire()?);
    assert!(!s.acquire_timeout(Duration::from_millis(5))?);
    s.release()?;
    s.release()?;
    s.release()?; // an unbounded semaphore may go past its initial value
    assert_eq!(s.get_value(), 3);
    Ok(())
}

/// TestSemaphore.test_bounded_semaphore: a release past the initial value
/// is an error (CPython's ValueError) and changes nothing.
#[mproc::test]
fn test_bounded_semaphore_over_release_is_an_error() -> mproc::Result<()> {
    let s = BoundedSemaphore::new(2)?;
    assert!(matches!(s.release(), Err(Error::ReleasedTooManyTimes)));
    s.acquire()?;
    s.release()?;
    assert!(matches!(s.release(), Err(Error::ReleasedTooManyTimes)));
    assert_eq!(s.get_value(), 2);
    let zero = BoundedSemaphore::new(0)?;
    assert!(!zero.try_acquire()?);
    assert!(zero.release().is_err());
    Ok(())
}

/// A child blocked in `acquire` on an empty semaphore is woken by a
/// release from another process.
#[mproc::test]
fn semaphore_release_in_one_process_wakes_another() -> mproc::Result<()> {
    let s = Semaphore::new(0)?;
    let done = Event::new()?;
    let waiter = mproc::spawn(acquire_and_report, (s.clone(), done.clone()))?;
    assert!(
        !done.wait_timeout(Duration::from_millis(20)),
        "nothing to take yet"
    );
    mproc::spawn(release_n, (s.clone(), 1))?
        .join()
        .and_then(back)?;
    assert_eq!(waiter.join().and_then(back)?, 0);
    Ok(())
}

// ---- Event (TestEvent) ----------------------------------------------------

/// TestEvent.test_event: clear at first, wait with timeout returns false;
/// set by another process, `wait` returns and `is_set` is true; `clear`.
#[mproc::test]
fn test_event() -> mproc::Result<()> {
    let e = Event::new()?;
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::ZERO));
    assert!(!e.wait_timeout(Duration::from_millis(10)));
    mproc::spawn(set_event, (e.clone(),))?.join()?;
    assert!(e.is_set());
    assert!(e.wait_timeout(Duration::ZERO));
    e.wait();
    e.clear();
    assert!(!e.is_set());
    // Waiters in other processes are all woken by one set.
    let started = Semaphore::new(0)?;
    let waiters: Vec<_> = (0..2)
        .map(|_| mproc::spawn(wait_event, (e.clone(), started.clone())))
        .collect::<mproc::Result<_>>()?;
    started.acquire()?;
    started.acquire()?;
    e.set();
    for w in waiters {
        assert!(w.join()?);
    }
    Ok(())
}

// ---- Condition (TestCondition) --------------------------------------------

/// TestCondition.test_notify: `notify(1)` wakes one waiter, then
/// `notify_all` the rest.
#[mproc::test]
fn test_condition_notify_and_notify_all() -> mproc::Result<()> {
    let cond = Condition::new()?;
    let (waiting, woken) = (Semaphore::new(0)?, Semaphore::new(0)?);
    let mut ps = Vec::new();
    for _ in 0..3 {
        let mut p = Process::new(cond_waiter, (cond.clone(), waiting.clone(), woken.clone()));
        p.start()?;
        ps.push(p);
    }
    for _ in 0..3 {
        waiting.acquire()?; // released while holding the lock
    }
    {
        // Taking the lock proves each announced waiter is now in `wait`.
        let _g = cond.acquire()?;
        cond.notify(1);
    }
    woken.acquire()?;
    assert!(
        !woken.acquire_timeout(Duration::from_millis(20))?,
        "notify(1) woke more than one"
    );
    cond.notify_all();
    for p in &mut ps {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(woken.get_value(), 2);
    Ok(())
}

/// TestCondition.test_timeout: `wait_timeout` with nobody notifying
/// returns false, with the lock held again.
#[mproc::test]
fn test_condition_wait_timeout() -> mproc::Result<()> {
    let cond = Condition::new()?;
    let mut g = cond.acquire()?;
    assert!(!g.wait_timeout(Duration::from_millis(10))?);
    // Held again (recursively, as an RLock): another level is fine.
    let g2 = cond.acquire()?;
    drop(g2);
    drop(g);
    Ok(())
}

/// TestCondition.test_waitfor: `wait_for` returns once the predicate holds.
#[mproc::test]
fn test_condition_wait_for() -> mproc::Result<()> {
    let cond = Condition::new()?;
    let state = Value::new(0u32)?;
    let w = mproc::spawn(cond_wait_for, (cond.clone(), state.clone(), 3))?;
    for _ in 0..3 {
        let _g = cond.acquire()?;
        *state.lock()? += 1;
        cond.notify_all();
    }
    assert_eq!(w.join().and_then(back)?, 3);
    Ok(())
}

/// Beyond CPython: a waiter killed in `wait` leaves the condition usable;
/// a later `notify(1)` is not spent on the dead waiter.
#[mproc::test]
fn condition_waiter_killed_in_wait_leaves_it_usable() -> mproc::Result<()> {
    let cond = Condition::new()?;
    let waiting = Semaphore::new(0)?;
    let mut dead = Process::new(cond_wait_until_killed, (cond.clone(), waiting.clone()));
    dead.start()?;
    waiting.acquire()?;
    drop(cond.acquire()?); // the waiter is in `wait` now
    dead.kill()?;
    dead.join()?;
    let woken = Semaphore::new(0)?;
    let mut live = Process::new(cond_waiter, (cond.clone(), waiting.clone(), woken.clone()));
    live.start()?;
    waiting.acquire()?;
    {
        let _g = cond.acquire()?;
        cond.notify(1);
    }
    live.join()?;
    assert_eq!(live.exitcode(), Some(0));
    assert_eq!(woken.get_value(), 1);
    Ok(())
}

// ---- Barrier (TestBarrier) -------------------------------------------------

/// TestBarrier.test_barrier: 3 processes pass together, each index once,
/// several rounds.
#[mproc::test]
fn test_barrier_rounds() -> mproc::Result<()> {
    let b = Barrier::new(3)?;
    assert_eq!(b.parties(), 3);
    // A child that cannot start aborts the barrier: the one already
    // started then sees it broken and ends, instead of waiting for a
    // party that never comes while the exit procedure joins it (a hang
    // seen under Wine when `CreateProcessW` failed on a loaded machine).
    let others: Vec<_> = (0..2)
        .map(|_| mproc::spawn(barrier_rounds, (b.clone(), 3)))
        .collect::<mproc::Result<_>>()
        .inspect_err(|_| b.abort())?;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(b.wait()?);
    }
    let theirs: Vec<Vec<usize>> = others
        .into_iter()
        .map(|h| h.join().and_then(back))
        .collect::<mproc::Result<_>>()?;
    for round in 0..3 {
        let mut idx = vec![mine[round], theirs[0][round], theirs[1][round]];
        idx.sort_unstable();
        assert_eq!(idx, [0, 1, 2]);
    }
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    Ok(())
}

/// TestBarrier.test_abort / test_timeout: a timed-out wait breaks the
/// barrier for everyone until `reset`.
#[mproc::test]
fn test_barrier_timeout_abort_and_reset() -> mproc::Result<()> {
    let b = Barrier::new(2)?;
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(10)),
        Err(Error::BrokenBarrier)
    ));
    assert!(b.broken());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset();
    assert!(!b.broken());
    let other = mproc::spawn(barrier_party, (b.clone(),))?;
    let me = b.wait()?;
    let them = other.join().and_then(back)?;
    assert_eq!(me + them, 1);
    b.abort();
    assert!(b.broken());
    assert!(mproc::spawn(barrier_party, (b.clone(),))?
        .join()?
        .unwrap_err()
        .contains("BrokenBarrierError"));
    Ok(())
}

/// TestBarrier.test_reset: a party waiting when `reset` runs gets
/// BrokenBarrier; the barrier then works again.
#[mproc::test]
fn test_barrier_reset_breaks_waiters() -> mproc::Result<()> {
    let b = Barrier::new(2)?;
    let arrived = Semaphore::new(0)?;
    let w = mproc::spawn(barrier_wait_announced, (b.clone(), arrived.clone()))?;
    arrived.acquire()?;
    while b.n_waiting() == 0 {
        std::thread::yield_now();
    }
    b.reset();
    assert!(w.join()?.unwrap_err().contains("BrokenBarrierError"));
    assert!(!b.broken());
    let other = mproc::spawn(barrier_party, (b.clone(),))?;
    b.wait()?;
    other.join().and_then(back)?;
    Ok(())
}

/// Beyond CPython: a party killed while waiting breaks the barrier for the
/// others (BrokenBarrier) instead of leaving them waiting for ever.
#[mproc::test]
fn barrier_party_killed_while_waiting_breaks_it() -> mproc::Result<()> {
    let b = Barrier::new(3)?;
    let arrived = Semaphore::new(0)?;
    let mut dead = Process::new(barrier_wait_announced, (b.clone(), arrived.clone()));
    dead.start()?;
    arrived.acquire()?;
    while b.n_waiting() == 0 {
        std::thread::yield_now();
    }
    dead.kill()?;
    dead.join()?;
    // Two of three would wait for ever; the dead party is noticed instead.
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    assert!(b.broken());
    Ok(())
}

/// Misuse: a barrier of zero parties is refused.
#[mproc::test]
fn barrier_of_zero_parties_is_an_error() {
    assert!(Barrier::new(0).is_err());
}

/// The guide: the types travel in a Queue item and over a Connection too,
/// to a process that is already running (CPython refuses: "Lock objects
/// should only be shared between processes through inheritance").
#[mproc::test]
fn lock_in_a_queue_item_and_event_over_a_connection() -> mproc::Result<()> {
    let q = Queue::<Lock>::new(0)?;
    let (mine, theirs) = mproc::pipe(true)?;
    let child = mproc::spawn(receive_late, (q.clone(), theirs))?;
    let lock = Lock::new()?;
    let event = Event::new()?;
    let g = lock.acquire()?;
    q.put(lock.clone()).map_err(Error::from)?;
    mine.send(&event)?;
    assert_eq!(child.join().and_then(back)?, (false, true));
    assert!(event.is_set(), "the child set this very event");
    drop(g);
    Ok(())
}

/// Misuse: a 33rd thread waiting on one Condition at once is an error
/// (the documented limit), not UB or a lost waiter; the 32 others are
/// still woken by `notify_all`.
#[mproc::test]
fn condition_beyond_32_waiters_is_an_error() -> mproc::Result<()> {
    let cond = Condition::new()?;
    let waiting = Semaphore::new(0)?;
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (c, w) = (cond.clone(), waiting.clone());
            std::thread::spawn(move || -> mproc::Result<()> {
                let mut g = c.acquire()?;
                w.release()?;
                g.wait()
            })
        })
        .collect();
    for _ in 0..32 {
        waiting.acquire()?;
    }
    {
        let mut g = cond.acquire()?;
        assert!(g.wait_timeout(Duration::from_millis(1)).is_err());
    }
    cond.notify_all();
    for t in threads {
        t.join().expect("waiter thread")?;
    }
    Ok(())
}

/// Misuse: a guard leaked with `mem::forget`, then every handle of the
/// lock dropped, then other locks used: no crash (the leaked lock's
/// mapping is kept, since the OS still lists the mutex as held).
#[mproc::test]
fn a_leaked_guard_then_dropped_lock_is_harmless() -> mproc::Result<()> {
    let other = Lock::new()?;
    let held = other.acquire()?;
    let lock = Lock::new()?;
    std::mem::forget(lock.acquire()?);
    drop(lock);
    // Releasing `other` walks this thread's robust list past the leaked
    // lock's entry (glibc keeps it newest first).
    drop(held);
    for _ in 0..3 {
        drop(other.acquire()?);
    }
    let v = Value::new(1u8)?;
    *v.lock()? += 1;
    assert_eq!(v.get(), 2);
    Ok(())
}

/// Misuse: a lock put in a queue by a process that no longer holds it
/// when the item is taken cannot be opened: `get` is an error (never a
/// hang, nor another object that happens to reuse the descriptor).
#[mproc::test]
fn a_lock_dropped_by_its_sender_before_the_get_is_an_error() -> mproc::Result<()> {
    let q = Queue::<Lock>::new(0)?;
    q.put(Lock::new()?).map_err(Error::from)?; // the only handle: gone after the put
    let _decoy = (Lock::new()?, Event::new()?); // may reuse its descriptor numbers
    let got = mproc::spawn(get_lock, (q.clone(),))?.join()?;
    let err = got.expect_err("the lock's sender no longer holds it");
    assert!(err.contains("cannot decode"), "{err}");
    Ok(())
}
