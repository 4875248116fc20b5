//! Synchronisation figures (issue 16): the floor and mproc.
//!
//! | figure | keys | value |
//! |---|---|---|
//! | `lock-uncontended` | `iters` | ns per acquire+release (floor: a process-local `std::sync::Mutex`) |
//! | `value-incr` | `iters` (per process) | increments/s of `*v.lock()? += 1` by 2 processes (floor: none) |
//! | `event-rt` | `iters` | µs per Event ping-pong round trip, both on one CPU (floor: a 1-byte pipe round trip, pinned) |
//! | `barrier-rt` | `iters` | µs per `Barrier(2)` round across 2 processes (floor: a 1-byte pipe round trip) |

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use mproc::{Barrier, Event, Semaphore, Value};

use crate::{floor, os, NotAvailable, Outcome, Params};

type Figure = fn(&Params) -> io::Result<Outcome>;

/// The figure `name` for contender `who`, if it is one of these.
pub fn figure(who: &str, name: &str) -> Option<Figure> {
    Some(match (who, name) {
        ("floor", "lock-uncontended") => floor_lock,
        ("mproc", "lock-uncontended") => lock_uncontended,
        ("floor", "value-incr") => |_| Ok(Err(NotAvailable("compared with CPython".into()))),
        ("mproc", "value-incr") => value_incr,
        ("floor", "event-rt") => |p| floor_pipe_rt(p, true),
        ("mproc", "event-rt") => event_rt,
        ("floor", "barrier-rt") => |p| floor_pipe_rt(p, false),
        ("mproc", "barrier-rt") => barrier_rt,
        (_, "lock-uncontended" | "value-incr" | "event-rt" | "barrier-rt") => crate::not_applicable,
        _ => return None,
    })
}

fn err(e: mproc::Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn floor_lock(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 10_000_000);
    let m = std::sync::Mutex::new(0u64);
    let t0 = Instant::now();
    for _ in 0..iters {
        let mut g = m.lock().map_err(|_| io::Error::other("poisoned"))?;
        *g = std::hint::black_box(*g + 1);
    }
    Ok(Ok(t0.elapsed().as_nanos() as f64 / iters as f64))
}

fn lock_uncontended(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 10_000_000);
    let lock = mproc::Lock::new().map_err(err)?;
    let mut n = 0u64;
    let t0 = Instant::now();
    for _ in 0..iters {
        let g = lock.acquire().map_err(err)?;
        n = std::hint::black_box(n + 1);
        drop(g);
    }
    Ok(Ok(t0.elapsed().as_nanos() as f64 / iters as f64))
}

/// A floor pipe round trip of 1 byte (pinned or not), as `pipe-rt`.
fn floor_pipe_rt(p: &Params, pinned: bool) -> io::Result<Outcome> {
    let mut map = BTreeMap::new();
    map.insert("iters".to_string(), p.get("iters", 20_000).to_string());
    map.insert("size".to_string(), "1".to_string());
    map.insert("pinned".to_string(), (pinned as usize).to_string());
    (floor::CONTENDER.pipe_rt)(&Params(map))
}

#[mproc::target]
fn incr(v: Value<u64>, ready: Semaphore, go: Event, n: u64) -> Result<(), String> {
    ready.release().map_err(|e| e.to_string())?;
    go.wait();
    for _ in 0..n {
        *v.lock().map_err(|e| e.to_string())? += 1;
    }
    Ok(())
}

fn value_incr(p: &Params) -> io::Result<Outcome> {
    let n = p.get("iters", 1_000_000) as u64;
    let v = Value::new(0u64).map_err(err)?;
    let ready = Semaphore::new(0).map_err(err)?;
    let go = Event::new().map_err(err)?;
    let hs = (0..2)
        .map(|_| mproc::spawn(incr, (v.clone(), ready.clone(), go.clone(), n)))
        .collect::<mproc::Result<Vec<_>>>()
        .map_err(err)?;
    for _ in 0..2 {
        ready.acquire().map_err(err)?;
    }
    let t0 = Instant::now();
    go.set();
    for h in hs {
        h.join().map_err(err)?.map_err(io::Error::other)?;
    }
    let dt = t0.elapsed();
    if v.get() != 2 * n {
        return Err(io::Error::other(format!(
            "final value {} != {}",
            v.get(),
            2 * n
        )));
    }
    Ok(Ok(2.0 * n as f64 / dt.as_secs_f64()))
}

#[mproc::target]
fn pong(ping: Event, pong: Event, n: u64) {
    for _ in 0..n {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

fn event_rt(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 20_000) as u64;
    os::pin_to_one_cpu()?;
    let (a, b) = (Event::new().map_err(err)?, Event::new().map_err(err)?);
    let warm = iters / 10;
    let h = mproc::spawn(pong, (a.clone(), b.clone(), warm + iters)).map_err(err)?;
    let rt = || {
        a.set();
        b.wait();
        b.clear();
    };
    for _ in 0..warm {
        rt();
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        rt();
    }
    let dt = t0.elapsed();
    h.join().map_err(err)?;
    Ok(Ok(dt.as_secs_f64() * 1e6 / iters as f64))
}

#[mproc::target]
fn party(b: Barrier, n: u64) -> Result<(), String> {
    for _ in 0..n {
        b.wait().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn barrier_rt(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 20_000) as u64;
    let b = Barrier::new(2).map_err(err)?;
    let warm = iters / 10;
    let h = mproc::spawn(party, (b.clone(), warm + iters)).map_err(err)?;
    for _ in 0..warm {
        b.wait().map_err(err)?;
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        b.wait().map_err(err)?;
    }
    let dt = t0.elapsed();
    h.join().map_err(err)?.map_err(io::Error::other)?;
    Ok(Ok(dt.as_secs_f64() * 1e6 / iters as f64))
}
