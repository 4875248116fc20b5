//! A child whose target ends with `std::process::exit` still runs the
//! exit hooks — mproc's exit procedure (joins its non-daemonic children)
//! and the queues' hand-over (taken items acknowledged) — on every OS. On
//! Windows that takes the ExitProcess hook (docs/platforms.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mproc::{Process, Queue};

fn sentinel_path(tag: &str) -> PathBuf {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "mproc-exit-hook-{tag}-{}-{nonce}",
        std::process::id()
    ))
}

#[mproc::target]
fn sleep_then_write(path: String) {
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&path, b"done").unwrap();
}

#[mproc::target]
fn start_grandchild_then_exit(path: String, init: bool) {
    if init {
        // Registers the exit procedure in this process (a no-op beyond that
        // in a child).
        mproc::init();
    }
    let mut p = Process::new(sleep_then_write, (path,));
    p.start().unwrap();
    // No join: the exit procedure, run by the exit hook, joins it.
    std::process::exit(0);
}

fn join_within(p: &mut Process, limit: Duration) {
    p.join_timeout(limit).unwrap();
    if p.exitcode().is_none() {
        let _ = p.kill();
        panic!("the child did not end within {limit:?}");
    }
}

fn check_grandchild_joined(init: bool) -> mproc::Result<()> {
    let path = sentinel_path(if init { "init" } else { "join" });
    let mut p = Process::new(
        start_grandchild_then_exit,
        (path.to_string_lossy().into_owned(), init),
    );
    let t = Instant::now();
    p.start()?;
    join_within(&mut p, Duration::from_secs(60));
    let took = t.elapsed();
    assert_eq!(p.exitcode(), Some(0));
    let present = Path::new(&path).exists();
    if !present {
        // Let a late grandchild finish, so it leaves no file behind.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(&path);
    assert!(
        present,
        "the child ended ({took:?} after its start) before its non-daemonic child: \
         its exit procedure did not run at std::process::exit"
    );
    Ok(())
}

/// The ExitProcess hook (Windows) or atexit (Unix) runs mproc's exit
/// procedure, registered here by `mproc::init()` in the child.
#[mproc::test]
fn a_child_that_exits_still_joins_its_children_after_init() -> mproc::Result<()> {
    check_grandchild_joined(true)
}

/// As above, without `init()` in the child: the exit procedure must be
/// registered in every child.
#[mproc::test]
fn a_child_that_exits_still_joins_its_children() -> mproc::Result<()> {
    check_grandchild_joined(false)
}

const ITEMS: u32 = 2000;
const TAKEN: u32 = 500;

#[mproc::target]
fn take_some_then_exit(q: Queue<u32>) {
    // Taken fast, so that deliveries come in batches: at exit this process
    // holds items it took but has not acknowledged yet, and items it
    // received but did not take.
    for i in 0..TAKEN {
        assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), i);
    }
    // No return, no drop: the exit hook acknowledges the taken items and
    // gives back the others.
    std::process::exit(0);
}

#[mproc::test]
fn a_consumer_that_exits_does_not_give_its_items_again() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    for i in 0..ITEMS {
        q.put(i)?;
    }
    let mut p = Process::new(take_some_then_exit, (q.clone(),));
    p.start()?;
    join_within(&mut p, Duration::from_secs(60));
    assert_eq!(p.exitcode(), Some(0));
    let mut rest: Vec<u32> = (TAKEN..ITEMS)
        .map(|_| q.get_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    rest.sort_unstable();
    let again: Vec<u32> = rest.iter().copied().filter(|&i| i < TAKEN).collect();
    assert!(
        again.is_empty(),
        "{} items the child took came back (from {:?} to {:?})",
        again.len(),
        again.first(),
        again.last()
    );
    assert_eq!(rest, (TAKEN..ITEMS).collect::<Vec<_>>(), "items were lost");
    // Nothing more: in particular not a taken item, late.
    assert!(
        q.get_timeout(Duration::from_millis(500)).is_err(),
        "an item came twice"
    );
    Ok(())
}
