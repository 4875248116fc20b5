//! `mproc-bench`: one contender measuring one figure for one repetition.
//!
//! ```text
//! mproc-bench <floor|mproc|procspawn> <figure> [key=value]...
//! ```
//!
//! prints `RESULT <value>` (the figure's unit, see below) or `NA <reason>`
//! on stdout. `cargo xtask bench` (xtask/src/bench/) runs the contenders
//! interleaved, takes medians and prints the table; the CPython contender
//! is `bench/python/mp_bench.py`, which speaks the same protocol.
//!
//! | figure | keys | value |
//! |---|---|---|
//! | `spawn-first-line` | `samples` | median ms from start to the target's first line |
//! | `start-join` | `procs` | ms to start `procs` processes, then join them all |
//! | `idle-rss` | `samples` | median peak RSS (VmHWM) of an idle child, MiB |
//! | `pipe-rt` | `iters`, `size`, `pinned` | µs per round trip |
//! | `pipe-bulk` | `msgs`, `size`, `typed` (0 bytes, 1 `Vec<u8>`, 2 `ByteBuf`) | GB/s one way |
//! | `queue-items` | `items`, `size`, `producers`, `consumers` | items/s |
//! | `pool` | `op`, `n`, `workers`, `us` | tasks/s, µs or ms (see `pool_side.rs`) |
//! | `lock-uncontended`, `value-incr`, `event-rt`, `barrier-rt` | see `sync_side.rs` | |
//!
//! The same binary is every contender's child: the floor's children are
//! recognised by `MPROC_BENCH_FLOOR` at the top of `main`, procspawn's by
//! `procspawn::init()`, mproc's by its constructor before `main`.

mod floor;
mod mproc_side;
mod os;
mod pool_side;
mod procspawn_side;
mod sync_side;

use std::collections::BTreeMap;
use std::process::ExitCode;

/// Why a contender has no value for a figure.
pub struct NotAvailable(pub String);

/// One repetition's value, or why there is none.
pub type Outcome = Result<f64, NotAvailable>;

/// A figure's `key=value` parameters.
pub struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(args: &[String]) -> Result<Params, String> {
        let mut map = BTreeMap::new();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {a:?}"))?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Params(map))
    }

    /// The value of `key` (or `default`).
    pub fn get(&self, key: &str, default: usize) -> usize {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// A 0/1 flag.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key, 0) != 0
    }
}

type Figure = fn(&Params) -> std::io::Result<Outcome>;

/// One contender's figures, by name.
pub struct Contender {
    /// Spawn → the child's first message.
    pub spawn_first_line: Figure,
    /// Start and join of 100 children.
    pub start_join: Figure,
    /// A waiting child's resident memory.
    pub idle_rss: Figure,
    /// Pipe round trip of a small message.
    pub pipe_rt: Figure,
    /// Pipe throughput of large messages.
    pub pipe_bulk: Figure,
    /// Queue items per second.
    pub queue_items: Figure,
    /// Pool map.
    pub pool: Figure,
}

fn contender(name: &str) -> Option<Contender> {
    match name {
        "floor" => Some(floor::CONTENDER),
        "mproc" => Some(mproc_side::CONTENDER),
        "procspawn" => Some(procspawn_side::CONTENDER),
        _ => None,
    }
}

fn figure(c: &Contender, name: &str) -> Option<Figure> {
    Some(match name {
        "spawn-first-line" => c.spawn_first_line,
        "start-join" => c.start_join,
        "idle-rss" => c.idle_rss,
        "pipe-rt" => c.pipe_rt,
        "pipe-bulk" => c.pipe_bulk,
        "queue-items" => c.queue_items,
        "pool" => c.pool,
        _ => return None,
    })
}

/// The figure does not apply to this contender.
pub fn not_applicable(_: &Params) -> std::io::Result<Outcome> {
    Ok(Err(NotAvailable("does not apply".into())))
}

fn main() -> ExitCode {
    // Children first, before anything else runs: the floor's, then
    // procspawn's (mproc's never get here).
    floor::child_main();
    procspawn::init();
    mproc::init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: mproc-bench <floor|mproc|procspawn> <figure> [key=value]...";
    let (Some(who), Some(what)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let Some(c) = contender(who) else {
        eprintln!("unknown contender {who:?}; {usage}");
        return ExitCode::from(2);
    };
    let Some(f) = sync_side::figure(who, what).or_else(|| figure(&c, what)) else {
        eprintln!("unknown figure {what:?}; {usage}");
        return ExitCode::from(2);
    };
    let params = match Params::parse(&args[2..]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}; {usage}");
            return ExitCode::from(2);
        }
    };
    match f(&params) {
        Ok(Ok(v)) => {
            println!("RESULT {v}");
            ExitCode::SUCCESS
        }
        Ok(Err(NotAvailable(why))) => {
            println!("NA {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mproc-bench {who} {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
