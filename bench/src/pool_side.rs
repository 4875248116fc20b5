//! The `pool` figure (issue 15): mproc's `Pool`, procspawn's `Pool`, and
//! the reference each row is held against (the floor column): rayon's
//! `par_iter` on the same CPU-bound tasks, in one process, and 4 bare
//! `mproc::spawn`s for the pool's start.
//!
//! `cluster_start` (issue 18): a Pool of `workers` placed by
//! `Launcher::srun()` over `nodes` nodes, from `build()` to the first
//! `apply`'s answer, held against (`ref`) 0: one bare job step of as many
//! tasks (`srun --nodes=N --ntasks=W true`), or 1: the local Pool's start.
//! Only with a cluster (`SLURM_CONF` set); otherwise `NA`.
//!
//! Keys: `op` (see [`Op`]), `n` (tasks, or round trips), `workers` (0:
//! `cpu_count()`), `us` (CPU time of one `cpu` task, µs). Values: tasks/s
//! for `map`, `imap`, `apply_async` and `cpu`; µs for `apply_rt`; ms for
//! `start`.

use std::io;
use std::time::Instant;

use crate::{NotAvailable, Outcome, Params};

/// What a `pool` figure measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `map` of `n` tiny tasks (`x * x` on `u64`), default chunks.
    Map,
    /// `imap`, chunksize 1, over `n` tiny tasks, consumed in order.
    Imap,
    /// `n` `apply_async` of a tiny task, then every `get`.
    ApplyAsync,
    /// `n` `apply` round trips, one after another: µs each.
    ApplyRt,
    /// `map` of `n` tasks of `us` µs of CPU each.
    Cpu,
    /// Pool of `workers` started + the first `apply`'s result: ms.
    Start,
    /// The same for a Pool placed by `srun` over `nodes` nodes: ms.
    ClusterStart,
}

fn op(p: &Params) -> io::Result<Op> {
    Ok(match p.get("op", 99) {
        0 => Op::Map,
        1 => Op::Imap,
        2 => Op::ApplyAsync,
        3 => Op::ApplyRt,
        4 => Op::Cpu,
        5 => Op::Start,
        6 => Op::ClusterStart,
        other => return Err(io::Error::other(format!("unknown pool op {other}"))),
    })
}

fn workers(p: &Params) -> usize {
    match p.get("workers", 0) {
        0 => mproc::cpu_count(),
        n => n,
    }
}

/// Spins until this thread used `us` µs of CPU (the same work in every
/// contender and in CPython's `time.thread_time()` loop).
pub fn spin_cpu(us: u64) -> u64 {
    let start = thread_cpu_ns();
    let end = start + us * 1000;
    let mut n = 0u64;
    while thread_cpu_ns() < end {
        n = n.wrapping_add(1);
    }
    n
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[mproc::target]
fn sq(x: u64) -> u64 {
    x.wrapping_mul(x)
}

#[mproc::target]
fn spin(us: u64) -> u64 {
    spin_cpu(us)
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// `NA` unless a Slurm cluster is reachable (`SLURM_CONF` set).
fn no_cluster() -> Option<NotAvailable> {
    std::env::var_os("SLURM_CONF").is_none().then(|| {
        NotAvailable("no Slurm cluster: SLURM_CONF not set (cargo xtask slurm start)".into())
    })
}

/// Pool of `w` started and its first `apply` answered, ms: local, or
/// placed by `srun` over `nodes` nodes.
fn pool_start(w: usize, cluster: Option<usize>) -> io::Result<Outcome> {
    let t0 = Instant::now();
    let mut b = mproc::Pool::builder().processes(w);
    if let Some(nodes) = cluster {
        b = b.launcher(mproc::Launcher::srun().nodes(nodes));
    }
    let pool = b.build().map_err(err)?;
    let v = pool.apply(sq, (3,)).map_err(err)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(v, 9);
    Ok(Ok(ms))
}

fn rate(n: usize, t0: Instant) -> Outcome {
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// mproc's `Pool`.
pub fn mproc_pool(p: &Params) -> io::Result<Outcome> {
    let op = op(p)?;
    let n = p.get("n", 1000);
    let w = workers(p);
    if op == Op::Start {
        let t0 = Instant::now();
        let pool = mproc::Pool::new(w).map_err(err)?;
        let v = pool.apply(sq, (3,)).map_err(err)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(v, 9);
        return Ok(Ok(ms));
    }
    if op == Op::ClusterStart {
        if let Some(na) = no_cluster() {
            return Ok(Err(na));
        }
        return pool_start(w, Some(p.get("nodes", 1)));
    }
    let pool = mproc::Pool::new(w).map_err(err)?;
    pool.map(sq, 0..(w as u64 * 4)).map_err(err)?;
    let n64 = n as u64;
    let t0 = Instant::now();
    Ok(match op {
        Op::Map => {
            let v = pool.map(sq, 0..n64).map_err(err)?;
            let r = rate(n, t0);
            assert_eq!(v.len(), n);
            r
        }
        Op::Imap => {
            let mut count = 0;
            for r in pool.imap(sq, 0..n64).map_err(err)? {
                r.map_err(err)?;
                count += 1;
            }
            assert_eq!(count, n);
            rate(n, t0)
        }
        Op::ApplyAsync => {
            let pending = (0..n64)
                .map(|i| pool.apply_async(sq, (i,)))
                .collect::<mproc::Result<Vec<_>>>()
                .map_err(err)?;
            for r in pending {
                r.get().map_err(err)?;
            }
            rate(n, t0)
        }
        Op::ApplyRt => {
            for i in 0..n64 {
                pool.apply(sq, (i,)).map_err(err)?;
            }
            Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
        }
        Op::Cpu => {
            let us = p.get("us", 1000) as u64;
            let v = pool.map(spin, vec![us; n]).map_err(err)?;
            let r = rate(n, t0);
            assert_eq!(v.len(), n);
            r
        }
        Op::Start | Op::ClusterStart => unreachable!("handled above"),
    })
}

/// The reference: rayon in one process for `cpu`, bare spawns for `start`.
pub fn reference(p: &Params) -> io::Result<Outcome> {
    let w = workers(p);
    let n = p.get("n", 1000);
    match op(p)? {
        Op::Cpu => {
            let us = p.get("us", 1000) as u64;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(w)
                .build()
                .map_err(err)?;
            let t0 = Instant::now();
            let total: u64 = pool.install(|| {
                use rayon::prelude::*;
                (0..n).into_par_iter().map(|_| spin_cpu(us)).sum()
            });
            let r = rate(n, t0);
            std::hint::black_box(total);
            Ok(r)
        }
        Op::Start => {
            let t0 = Instant::now();
            let handles = (0..w)
                .map(|_| mproc::spawn(sq, (3,)))
                .collect::<mproc::Result<Vec<_>>>()
                .map_err(err)?;
            for h in handles {
                h.join().map_err(err)?;
            }
            Ok(Ok(t0.elapsed().as_secs_f64() * 1e3))
        }
        Op::ClusterStart => {
            if let Some(na) = no_cluster() {
                return Ok(Err(na));
            }
            if p.get("ref", 0) == 1 {
                return pool_start(w, None);
            }
            // One bare job step of as many tasks, on as many nodes, as the
            // cluster Pool's: what srun alone costs.
            let t0 = Instant::now();
            let status = std::process::Command::new("srun")
                .arg(format!("--nodes={}", p.get("nodes", 1)))
                .arg(format!("--ntasks={w}"))
                .arg("--quiet")
                .arg("true")
                .stdin(std::process::Stdio::null())
                .status()?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if !status.success() {
                return Err(io::Error::other(format!("srun true: {status}")));
            }
            Ok(Ok(ms))
        }
        _ => Ok(Err(NotAvailable("no reference for this row".into()))),
    }
}

/// Jobs procspawn may have out at once (its descriptors per job).
const PROCSPAWN_WINDOW: usize = 200;

/// procspawn's `Pool` (a job per task; `map` as one job per chunk).
pub fn procspawn_pool(p: &Params) -> io::Result<Outcome> {
    let op = op(p)?;
    let n = p.get("n", 1000);
    let w = workers(p);
    if op == Op::ClusterStart {
        return Ok(Err(NotAvailable("does not apply".into())));
    }
    if op == Op::Start {
        let t0 = Instant::now();
        let pool = procspawn::Pool::new(w).map_err(err)?;
        let v = pool.spawn(3u64, |x: u64| x * x).join().map_err(err)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(v, 9);
        return Ok(Ok(ms));
    }
    let pool = procspawn::Pool::new(w).map_err(err)?;
    for h in (0..w as u64 * 4)
        .map(|i| pool.spawn(i, |x: u64| x * x))
        .collect::<Vec<_>>()
    {
        h.join().map_err(err)?;
    }
    let n64 = n as u64;
    let t0 = Instant::now();
    Ok(match op {
        Op::Map => {
            let chunk = n64.div_ceil(4 * w as u64).max(1);
            let jobs: Vec<_> = (0..n64)
                .step_by(chunk as usize)
                .map(|lo| {
                    pool.spawn((lo, (lo + chunk).min(n64)), |(lo, hi): (u64, u64)| {
                        (lo..hi).map(|x| x.wrapping_mul(x)).collect::<Vec<u64>>()
                    })
                })
                .collect();
            let mut len = 0;
            for j in jobs {
                len += j.join().map_err(err)?.len();
            }
            assert_eq!(len, n);
            rate(n, t0)
        }
        Op::Imap | Op::ApplyAsync => {
            // procspawn opens two channels (four descriptors) per job: at
            // most PROCSPAWN_WINDOW jobs are out at once, or it runs out.
            for lo in (0..n64).step_by(PROCSPAWN_WINDOW) {
                let hi = (lo + PROCSPAWN_WINDOW as u64).min(n64);
                let jobs: Vec<_> = (lo..hi).map(|i| pool.spawn(i, |x: u64| x * x)).collect();
                for j in jobs {
                    j.join().map_err(err)?;
                }
            }
            rate(n, t0)
        }
        Op::ApplyRt => {
            for i in 0..n64 {
                pool.spawn(i, |x: u64| x * x).join().map_err(err)?;
            }
            Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
        }
        Op::Cpu => {
            let us = p.get("us", 1000) as u64;
            let jobs: Vec<_> = (0..n).map(|_| pool.spawn(us, spin_cpu)).collect();
            for j in jobs {
                j.join().map_err(err)?;
            }
            rate(n, t0)
        }
        Op::Start | Op::ClusterStart => unreachable!("handled above"),
    })
}
