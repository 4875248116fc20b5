//! The seed's producer–consumer program (the README's main job): two
//! producers and two consumers share one bounded `Queue`; `None` is the
//! stop signal, one per consumer.
//!
//! ```python
//! def producer(q, name):
//!     for i in range(5):
//!         item = f"{name}-{i}"
//!         time.sleep(random.uniform(1, 2))
//!         print(f"[producer {name}] Put: {item}")
//!         q.put(item)
//!
//! def consumer(q, name):
//!     while True:
//!         item = q.get()
//!         if item is None:
//!             print(f"[consumer {name}] received termination signal")
//!             break
//!         time.sleep(random.uniform(0.5, 1.5))
//!         print(f"[consumer {name}] received item: {item}")
//!
//! q = multiprocessing.Queue(maxsize=3)
//! # start P1, P2, C1, C2; join the producers; one None per consumer;
//! # join the consumers; print("All processes completed")
//! ```
//!
//! `cargo run --example producer_consumer` keeps the seed's delays;
//! `-- --fast` drops them (the tests use it). A child process does not see
//! this program's command line, so the flag travels in the targets'
//! arguments.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mproc::{Process, Queue};

/// A tiny xorshift generator seeded from the pid and the clock (the
/// seed's `random.uniform`, without a dependency).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }
}

/// Sleeps a random `low..high` seconds, unless `fast`.
fn nap(rng: &mut Rng, low: f64, high: f64, fast: bool) {
    let secs = rng.uniform(low, high);
    if !fast {
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

#[mproc::target]
fn producer(q: Queue<Option<String>>, name: String, fast: bool) -> mproc::Result<()> {
    let mut rng = Rng::new();
    for i in 0..5 {
        let item = format!("{name}-{i}");
        nap(&mut rng, 1.0, 2.0, fast); // random delay
        println!("[producer {name}] Put: {item}");
        q.put(Some(item))?;
    }
    Ok(())
}

#[mproc::target]
fn consumer(q: Queue<Option<String>>, name: String, fast: bool) -> mproc::Result<()> {
    let mut rng = Rng::new();
    loop {
        let Some(item) = q.get()? else {
            println!("[consumer {name}] received termination signal");
            break;
        };
        nap(&mut rng, 0.5, 1.5, fast); // simulated work
        println!("[consumer {name}] received item: {item}");
    }
    Ok(())
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    let fast = std::env::args().skip(1).any(|a| a == "--fast");
    let q = Queue::<Option<String>>::new(3)?;
    let mut producers = vec![
        Process::new(producer, (q.clone(), "P1".to_string(), fast)),
        Process::new(producer, (q.clone(), "P2".to_string(), fast)),
    ];
    let mut consumers = vec![
        Process::new(consumer, (q.clone(), "C1".to_string(), fast)),
        Process::new(consumer, (q.clone(), "C2".to_string(), fast)),
    ];
    for p in &mut producers {
        p.start()?;
    }
    for c in &mut consumers {
        c.start()?;
    }
    for p in &mut producers {
        p.join()?;
    }
    for _ in &consumers {
        q.put(None)?; // one stop signal per consumer
    }
    for c in &mut consumers {
        c.join()?;
    }
    println!("All processes completed");
    Ok(())
}
