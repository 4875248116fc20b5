//! Queue hardening (issue 12, items 4–6): deadlines that are the caller's
//! whatever the owner does, bounded pre-authentication work at the broker,
//! and exact hand-over to consumers killed at any moment. Beyond CPython,
//! whose `get(timeout=…)` is bounded only because the pipe is local, whose
//! queue has no listener to flood, and which loses or hangs when a
//! consumer dies in `get`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mproc::{Error, Process, Queue};

// ---------------------------------------------------------------------
// Item 6: an item that get() returned is never delivered again.

/// Takes items for ever, appending each one's id to `record` before
/// taking the next (a write per item: what the kernel has survives a
/// SIGKILL). Stops at `None`.
#[mproc::target]
fn record_everything(q: Queue<Option<u32>>, record: PathBuf) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record)
        .expect("record file");
    while let Some(i) = q.get().expect("get") {
        f.write_all(format!("{i}\n").as_bytes()).expect("record");
    }
}

/// A small deterministic generator (the seed is printed for a rerun).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn read_record(path: &Path, seen: &mut HashMap<u32, u32>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let id: u32 = line.parse().expect("a whole id per line");
        *seen.entry(id).or_default() += 1;
    }
}

/// Consumers SIGKILLed (TerminateProcess on Windows) at random moments
/// while they take items in batches: the union of what every consumer's
/// code received, and what is left, holds each item at most once, and
/// every item but at most one per kill (the one inside the killed `get`,
/// acknowledged but not yet returned).
#[mproc::test]
fn consumers_killed_at_random_never_see_an_item_twice() -> mproc::Result<()> {
    const ITEMS: u32 = 60_000;
    const KILLS: usize = 8;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("mproc-test-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let q = Queue::<Option<u32>>::new(0)?;
    for i in 0..ITEMS {
        q.put(Some(i)).map_err(Error::from)?;
    }
    let mut records = Vec::new();
    let start = |records: &mut Vec<PathBuf>| -> mproc::Result<Process> {
        let path = dir.join(format!("{}.txt", records.len()));
        records.push(path.clone());
        let mut p = Process::new(record_everything, (q.clone(), path));
        p.start()?;
        Ok(p)
    };
    let mut live = vec![start(&mut records)?, start(&mut records)?];
    for _ in 0..KILLS {
        // A random moment of the consumers' work: the stimulus, not a
        // wait for anything to settle.
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
        let victim = rng.below(live.len() as u64) as usize;
        let mut p = live.swap_remove(victim);
        p.kill()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(-9));
        live.push(start(&mut records)?);
    }
    // The survivors take the rest and stop.
    for _ in &live {
        q.put(None).map_err(Error::from)?;
    }
    for p in &mut live {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut seen: HashMap<u32, u32> = HashMap::new();
    for r in &records {
        read_record(r, &mut seen);
    }
    while q.qsize() > 0 {
        if let Some(i) = q.get_timeout(Duration::from_secs(30))? {
            *seen.entry(i).or_default() += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?} (seed {seed})");
    let missing = (0..ITEMS).filter(|i| !seen.contains_key(i)).count();
    assert!(
        missing <= KILLS,
        "{missing} items lost with {KILLS} kills (seed {seed})"
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Item 4: deadlines are the caller's.

/// Creates a queue, puts 7 in it, hands it out, then serves it until
/// killed.
#[mproc::target]
fn own_a_queue(back: Queue<Queue<u32>>, maxsize: usize) {
    let q = Queue::<u32>::new(maxsize).expect("queue");
    q.put(7).expect("put");
    back.put(q.clone()).expect("hand out");
    std::thread::sleep(Duration::from_secs(3600));
}

/// A timed get from a process that never talked to the owner before: its
/// connection and handshake meet the deadline too. Returns the error's
/// text and how long it took.
#[mproc::target]
fn timed_get(q: Queue<u32>) -> (String, u128) {
    let t = Instant::now();
    let r = q.get_timeout(Duration::from_millis(300));
    // The error's `Display` (its `Debug` is derived).
    let text = match r {
        Ok(v) => format!("Ok({v})"),
        Err(e) => format!("Err({e})"),
    };
    (text, t.elapsed().as_millis())
}

/// Far below the time the owner stays stopped (it stays stopped until
/// every check below is done), generous for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(3);

/// Runs `f` on a thread and returns its result, or `None` if it has not
/// returned within twice [`BOUND`] (so that a regression fails the test
/// instead of hanging it while the owner is stopped).
fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND * 2).ok()
}

#[cfg(unix)]
fn signal(p: &Process, sig: i32) {
    let pid = p.pid().expect("started") as i32;
    // SAFETY: kill(2) with a pid this test started and has not reaped.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Waits until the child `p` is stopped (a SIGSTOP takes effect some time
/// after `kill` returns), leaving its state for mproc to collect later.
#[cfg(unix)]
fn wait_stopped(p: &Process) {
    let pid = p.pid().expect("started") as libc::id_t;
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child; WNOWAIT leaves it waitable.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
}

/// The owner is SIGSTOPped: a `get_timeout(300 ms)` returns `Empty`, a
/// `put_timeout` on a full queue returns `Full`, and a new child's first
/// `get_timeout` (connect + handshake) returns `Empty` — each within
/// [`BOUND`], while the owner is still stopped. Once it continues, the
/// queue works and nothing was lost. (Unix: Windows has no SIGSTOP;
/// docs/platforms.md.)
#[cfg(unix)]
#[mproc::test]
fn deadlines_hold_while_the_owner_is_stopped() -> mproc::Result<()> {
    use mproc::PutError;
    for maxsize in [0usize, 1] {
        let back = Queue::<Queue<u32>>::new(0)?;
        // Daemonic: a failing check cannot leave it behind at exit.
        let mut owner = Process::new(own_a_queue, (back.clone(), maxsize)).with_daemon(true);
        owner.start()?;
        let q = back.get_timeout(Duration::from_secs(30))?;
        assert_eq!(q.get()?, 7);
        q.put(8).map_err(Error::from)?;
        // The put is stored (and a bounded queue is now full).
        assert_eq!(q.qsize(), 1);
        signal(&owner, libc::SIGSTOP);
        wait_stopped(&owner);

        let q2 = q.clone();
        let got = within(move || {
            let t = Instant::now();
            (q2.get_timeout(Duration::from_millis(300)), t.elapsed())
        });
        let put = (maxsize == 1).then(|| {
            let q2 = q.clone();
            within(move || {
                let t = Instant::now();
                (q2.put_timeout(9, Duration::from_millis(300)), t.elapsed())
            })
        });
        let child = mproc::spawn(timed_get, (q.clone(),))?;
        child.join_timeout(BOUND * 2)?;
        let fresh = if child.is_alive()? {
            child.kill()?;
            None
        } else {
            Some(child.join()?)
        };
        // Every check ran while the owner was stopped; let it go on
        // before asserting, so that a failure does not leave it stopped.
        signal(&owner, libc::SIGCONT);

        let (r, took) = got.expect("get_timeout(300 ms) still blocked with the owner stopped");
        assert!(matches!(r, Err(Error::Empty)), "{r:?}");
        assert!(took < BOUND, "get_timeout(300 ms) took {took:?}");
        if let Some(put) = put {
            let (r, took) = put.expect("put_timeout(300 ms) still blocked with the owner stopped");
            assert!(matches!(r, Err(PutError::Full(9))), "{r:?}");
            assert!(took < BOUND, "put_timeout(300 ms) took {took:?}");
        }
        let (r, ms) =
            fresh.expect("a new holder's get_timeout still blocked with the owner stopped");
        assert_eq!(r, "Err(queue.Empty: the queue is empty)");
        assert!(
            ms < BOUND.as_millis(),
            "a new holder's get_timeout took {ms} ms"
        );

        // The item 8 the timed-out get may have been sent is back.
        assert_eq!(q.get_timeout(Duration::from_secs(30))?, 8);
        q.put(10).map_err(Error::from)?;
        assert_eq!(q.get_timeout(Duration::from_secs(30))?, 10);
        assert_eq!(q.qsize(), 0);
        owner.kill()?;
        owner.join()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Item 5: bounded pre-authentication work.

/// A queue handle's broker address, read from its serialised form.
fn broker_address<T>(q: &Queue<T>) -> mproc::Address {
    let bytes = postcard::to_stdvec(q).expect("a queue handle serialises");
    let (address, _key, _maxsize, _id): (mproc::Address, Vec<u8>, u64, u64) =
        postcard::from_bytes(&bytes).expect("a queue handle is address, key, maxsize, id");
    address
}

/// Connections that never say a word (no key, no answer to the
/// challenge), all held open.
fn flood(address: &mproc::Address, n: usize) -> mproc::Result<Vec<mproc::Connection>> {
    (0..n)
        .map(|_| mproc::Client::connect(address, None))
        .collect()
}

/// Puts `n` items and takes `n` back: a holder's whole life, from a
/// fresh process (new connections, new handshakes).
#[mproc::target]
fn put_then_get(q: Queue<u32>, n: u32) -> Vec<u32> {
    for i in 0..n {
        q.put(i).expect("put");
    }
    (0..n).map(|_| q.get().expect("get")).collect()
}

#[cfg(target_os = "linux")]
fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// 500 silent connections to a queue's broker, held open: the owner does
/// not start a thread for each (Linux: its thread count stays small), and
/// a new child's puts and gets go through while they are connected.
#[mproc::test]
fn a_flood_of_silent_connections_leaves_the_holders_working() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    q.put(99).map_err(Error::from)?;
    let address = broker_address(&q);
    #[cfg(target_os = "linux")]
    let threads = threads_of_this_process();
    let silent = flood(&address, 500)?;
    #[cfg(target_os = "linux")]
    {
        let now = threads_of_this_process();
        assert!(
            now < threads + 16,
            "{now} threads with 500 silent peers (was {threads})"
        );
    }
    assert_eq!(q.get()?, 99);
    let got = mproc::spawn(put_then_get, (q.clone(), 100))?.join()?;
    assert_eq!(got, (0..100).collect::<Vec<u32>>());
    // And more silent peers while a child works.
    let more = flood(&address, 100)?;
    let got = mproc::spawn(put_then_get, (q.clone(), 10))?.join()?;
    assert_eq!(got, (0..10).collect::<Vec<u32>>());
    assert!(q.empty());
    drop((silent, more));
    Ok(())
}

#[mproc::target]
fn nothing_at_all() {}

/// Owns a queue under a limit of 128 descriptors: hands it out, waits for
/// the flood, then starts a process and takes the item the parent put.
#[cfg(unix)]
#[mproc::target]
fn limited_owner(back: Queue<Queue<u32>>, go: Queue<u32>) -> String {
    let limit = libc::rlimit {
        rlim_cur: 128,
        rlim_max: 128,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return format!("setrlimit: {}", std::io::Error::last_os_error());
    }
    let q = Queue::<u32>::new(0).expect("queue");
    back.put(q.clone()).expect("hand out");
    go.get().expect("go");
    let mut p = Process::new(nothing_at_all, ());
    let started = p.start().and_then(|()| p.join());
    let got = q.get_timeout(Duration::from_secs(30));
    format!("{started:?} {:?} {got:?}", p.exitcode())
}

/// Under `ulimit -n 128`, 300 silent connections to the owner's broker
/// leave the owner able to start a process and serve a holder.
#[cfg(unix)]
#[mproc::test]
fn a_flood_under_a_low_descriptor_limit_leaves_the_owner_working() -> mproc::Result<()> {
    let back = Queue::<Queue<u32>>::new(0)?;
    let go = Queue::<u32>::new(0)?;
    let owner = mproc::spawn(limited_owner, (back.clone(), go.clone()))?;
    let q = back.get_timeout(Duration::from_secs(30))?;
    let silent = flood(&broker_address(&q), 300)?;
    q.put(42).map_err(Error::from)?;
    go.put(1).map_err(Error::from)?;
    assert_eq!(owner.join()?, "Ok(()) Some(0) Ok(42)");
    drop(silent);
    Ok(())
}
