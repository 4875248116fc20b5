//! Dialling ahead (issue 14 item 5, `queue/client/ahead.rs`): a process
//! that receives a queue handle connects to the owner's broker on a
//! thread of its own before it uses the queue, and its first `put` or
//! `get` says its hello on that connection. Whatever state that dial is
//! in when the first operation comes — under way, ready, failed, or not
//! started because the process received many handles at once — the
//! operation behaves as a fresh dial would: these tests make no
//! assumption about which state it finds.

use std::time::Duration;

use mproc::{Error, Process, PutError, Queue};

const LONG: Duration = Duration::from_secs(30);

/// Takes one item from each queue and puts it back plus 1000; the first
/// error's text, if any.
#[mproc::target]
fn bump_each(queues: Vec<Queue<u32>>) -> Result<(), String> {
    for q in &queues {
        let v = q.get_timeout(LONG).map_err(|e| e.to_string())?;
        q.put(v + 1000).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// More queues handed to a child at once than it dials ahead at once
/// (4): every one works, whether its first operation found a connection
/// dialled ahead or dialled itself.
#[mproc::test]
fn a_child_handed_many_queues_uses_every_one() -> mproc::Result<()> {
    let queues: Vec<Queue<u32>> = (0..12)
        .map(|_| Queue::new(0))
        .collect::<mproc::Result<_>>()?;
    for (i, q) in queues.iter().enumerate() {
        q.put(i as u32).map_err(Error::from)?;
    }
    assert_eq!(mproc::spawn(bump_each, (queues.clone(),))?.join()?, Ok(()));
    for (i, q) in queues.iter().enumerate() {
        assert_eq!(q.get_timeout(LONG)?, i as u32 + 1000);
        assert!(q.empty());
    }
    Ok(())
}

/// Creates a queue, hands it out, then serves it until killed.
#[mproc::target]
fn own_a_queue(back: Queue<Queue<u32>>) {
    let q = Queue::<u32>::new(0).expect("queue");
    q.put(7).expect("put");
    back.put(q.clone()).expect("hand out");
    std::thread::sleep(Duration::from_secs(3600));
}

/// Says it holds `q` (its dial ahead started), waits for `go`, then
/// tries `q`: the outcomes of a get and a put.
#[mproc::target]
fn try_after_go(q: Queue<u32>, ready: Queue<u32>, go: Queue<u32>) -> (String, String) {
    let said = ready.put(1);
    let went = go.get_timeout(LONG);
    if said.is_err() || went.is_err() {
        return (format!("{said:?}"), format!("{went:?}"));
    }
    let got = match q.get_timeout(LONG) {
        Err(Error::Disconnected) => "Disconnected".to_string(),
        other => format!("{other:?}"),
    };
    let put = match q.put(9) {
        Err(PutError::Disconnected(9)) => "Disconnected".to_string(),
        other => format!("{other:?}"),
    };
    (got, put)
}

/// The owner is killed after a child received its queue (the child's
/// dial ahead under way, done or failed): the child's first get and put
/// are `Disconnected`, never a hang, and never an item.
#[mproc::test]
fn an_owner_killed_after_the_handle_arrived_is_disconnected() -> mproc::Result<()> {
    let back = Queue::<Queue<u32>>::new(0)?;
    let mut owner = Process::new(own_a_queue, (back.clone(),)).with_daemon(true);
    owner.start()?;
    let q = back.get_timeout(LONG)?;
    let (ready, go) = (Queue::<u32>::new(0)?, Queue::<u32>::new(0)?);
    let child = mproc::spawn(try_after_go, (q.clone(), ready.clone(), go.clone()))?;
    assert_eq!(ready.get_timeout(LONG)?, 1);
    owner.kill()?;
    owner.join()?;
    go.put(1).map_err(Error::from)?;
    assert_eq!(
        child.join()?,
        ("Disconnected".to_string(), "Disconnected".to_string())
    );
    Ok(())
}

/// Receives a handle and never uses it.
#[mproc::target]
fn hold_only(_q: Queue<u32>) {}

/// Children that receive a queue and exit without using it (their dials
/// ahead never said a hello) leave the queue exact and working: a later
/// child takes every item, and the owner's count is exact.
#[mproc::test]
fn children_that_never_use_their_handle_leave_the_queue_exact() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    for i in 0..5 {
        q.put(i).map_err(Error::from)?;
    }
    for _ in 0..6 {
        mproc::spawn(hold_only, (q.clone(),))?.join()?;
    }
    assert_eq!(q.qsize(), 5);
    assert_eq!(mproc::spawn(bump_each, (vec![q.clone()],))?.join()?, Ok(()));
    assert_eq!(q.qsize(), 5);
    let mut got: Vec<u32> = (0..5)
        .map(|_| q.get_timeout(LONG))
        .collect::<mproc::Result<_>>()?;
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 1000]);
    Ok(())
}
