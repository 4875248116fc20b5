//! Queue hardening (issue 12, items 4–6): deadlines that are the caller's
//! whatever the owner does, bounded pre-authentication work at the broker,
//! and exact hand-over to consumers killed at any moment. Beyond CPython,
//! whose `get(timeout=…)` is bounded only because the pipe is local, whose
//! queue has no listener to flood, and which loses or hangs when a
//! consumer dies in `get`. Item 4's test (the owner SIGSTOPped) and the
//! flood under `RLIMIT_NOFILE` are Unix-only: `tests/sys/unix.rs`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mproc::{Error, Process, Queue};

#[path = "common/queue_handle.rs"]
mod queue_handle;
#[path = "common/sys/mod.rs"]
mod sys;

use queue_handle::{broker_address, flood};

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

/// Two consumers recording into files under `dir` (`record_everything`),
/// one of them SIGKILLed `kills` times at random moments (a pause of
/// `base` plus up to `spread` ms between kills), each replaced by a new
/// one: the consumers alive at the end, and every record file.
fn kill_at_random(
    q: &Queue<Option<u32>>,
    dir: &Path,
    rng: &mut Rng,
    kills: usize,
    (base, spread): (u64, u64),
) -> mproc::Result<(Vec<Process>, Vec<PathBuf>)> {
    let mut records = Vec::new();
    let start = |records: &mut Vec<PathBuf>| -> mproc::Result<Process> {
        let path = dir.join(format!("{}.txt", records.len()));
        records.push(path.clone());
        let mut p = Process::new(record_everything, (q.clone(), path));
        p.start()?;
        Ok(p)
    };
    let mut live = vec![start(&mut records)?, start(&mut records)?];
    for _ in 0..kills {
        // A random moment of the consumers' work: the stimulus, not a
        // wait for anything to settle.
        std::thread::sleep(Duration::from_millis(base + rng.below(spread)));
        let victim = rng.below(live.len() as u64) as usize;
        let mut p = live.swap_remove(victim);
        p.kill()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(-9));
        live.push(start(&mut records)?);
    }
    Ok((live, records))
}

/// The end of a killed-consumers run: the survivors get `None` each and
/// stop; what every consumer recorded and what is left in `q` hold each
/// of the `items` ids at most once, and all but at most one per kill.
fn stop_and_tally(
    q: &Queue<Option<u32>>,
    mut live: Vec<Process>,
    records: &[PathBuf],
    dir: &Path,
    (items, kills, seed): (u32, usize, u64),
) -> mproc::Result<()> {
    for _ in &live {
        q.put(None).map_err(Error::from)?;
    }
    for p in &mut live {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut seen: HashMap<u32, u32> = HashMap::new();
    for r in records {
        read_record(r, &mut seen);
    }
    while q.qsize() > 0 {
        if let Some(i) = q.get_timeout(Duration::from_secs(30))? {
            *seen.entry(i).or_default() += 1;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?} (seed {seed})");
    let missing = (0..items).filter(|i| !seen.contains_key(i)).count();
    eprintln!("{missing} items lost with {kills} kills");
    assert!(
        missing <= kills,
        "{missing} items lost with {kills} kills (seed {seed})"
    );
    Ok(())
}

fn read_record(path: &Path, seen: &mut HashMap<u32, u32>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let id: u32 = line.parse().expect("a whole id per line");
        *seen.entry(id).or_default() += 1;
    }
}

/// A random run's seed (printed, so that a failure can be replayed), its
/// generator, and a fresh directory for the consumers' records.
fn seeded_run(tag: &str) -> mproc::Result<(u64, Rng, std::path::PathBuf)> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let dir = std::env::temp_dir().join(format!("mproc-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok((seed, Rng(seed), dir))
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
    let (seed, mut rng, dir) = seeded_run("record")?;
    let q = Queue::<Option<u32>>::new(0)?;
    for i in 0..ITEMS {
        q.put(Some(i)).map_err(Error::from)?;
    }
    let (live, records) = kill_at_random(&q, &dir, &mut rng, KILLS, (5, 40))?;
    // The survivors take the rest and stop.
    stop_and_tally(&q, live, &records, &dir, (ITEMS, KILLS, seed))
}

/// Consumers killed at random moments while they take from a `Queue(1)`
/// that the owner fills as they go: every delivery is one item, taken by
/// the broker when it writes it (ack on send, issue 12 item 11), with
/// consumers killed while parked in `get`, with the item written to them,
/// or after `get` returned it. Each item is seen at most once, and all
/// but at most one per kill (the one inside the killed `get`).
#[mproc::test]
fn consumers_killed_at_random_on_a_queue_of_one_never_see_an_item_twice() -> mproc::Result<()> {
    const ITEMS: u32 = 3_000;
    const KILLS: usize = 8;
    let (seed, mut rng, dir) = seeded_run("record1")?;
    let q = Queue::<Option<u32>>::new(1)?;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..ITEMS {
                q.put(Some(i)).expect("put");
            }
        })
    };
    let (live, records) = kill_at_random(&q, &dir, &mut rng, KILLS, (2, 20))?;
    producer.join().expect("the producer thread");
    stop_and_tally(&q, live, &records, &dir, (ITEMS, KILLS, seed))
}

// ---------------------------------------------------------------------
// Item 5: bounded pre-authentication work.

/// Puts `n` items and takes `n` back: a holder's whole life, from a
/// fresh process (new connections, new handshakes).
#[mproc::target]
fn put_then_get(q: Queue<u32>, n: u32) -> Vec<u32> {
    for i in 0..n {
        q.put(i).expect("put");
    }
    (0..n).map(|_| q.get().expect("get")).collect()
}

/// 500 silent connections to a queue's broker, held open: the owner does
/// not start a thread for each (Linux: its thread count stays small), and
/// a new child's puts and gets go through while they are connected.
#[mproc::test]
fn a_flood_of_silent_connections_leaves_the_holders_working() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    q.put(99).map_err(Error::from)?;
    let address = broker_address(&q);
    let threads = sys::threads_of_this_process();
    let silent = flood(&address, 500)?;
    // Where the OS lists the threads (Linux).
    if let (Some(threads), Some(now)) = (threads, sys::threads_of_this_process()) {
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
