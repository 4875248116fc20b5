//! mproc: the same figures through mproc's public API, as a user writes
//! them. The spawn figures signal on an inherited descriptor exactly as
//! the floor does, so that they differ from the floor by mproc's own cost.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mproc::{Connection, Process, Queue};
use serde_bytes::ByteBuf;

use crate::{floor, os};
use crate::{Contender, Outcome, Params};

pub const CONTENDER: Contender = Contender {
    spawn_first_line,
    start_join,
    idle_rss,
    pipe_rt,
    pipe_bulk,
    queue_items,
    pool: crate::pool_side::mproc_pool,
};

fn err(e: mproc::Error) -> io::Error {
    io::Error::other(e.to_string())
}

#[mproc::target]
fn first_line(fd: RawFd) {
    os::signal(fd);
}

#[mproc::target]
fn nothing() {}

#[mproc::target]
fn idle(fd: RawFd) {
    os::signal(fd);
    std::thread::sleep(os::IDLE);
}

/// The forkserver rows (`forkserver=1`): every child is forked by the
/// server, so it inherits none of this process's descriptors; it signals
/// on a `pipe()` end passed in its arguments instead.
fn use_forkserver(p: &Params) -> io::Result<bool> {
    if p.get("forkserver", 0) == 0 {
        return Ok(false);
    }
    mproc::set_start_method(mproc::StartMethod::Forkserver).map_err(err)?;
    Ok(true)
}

#[mproc::target]
fn first_line_on(w: Connection) {
    let _ = w.send_bytes(b"x");
}

fn spawn_first_line(p: &Params) -> io::Result<Outcome> {
    let samples = p.get("samples", 200);
    if use_forkserver(p)? {
        let mut times = Vec::with_capacity(samples);
        for i in 0..=samples {
            let (r, w) = mproc::pipe(false).map_err(err)?;
            let mut child = Process::new(first_line_on, (w,));
            let t0 = Instant::now();
            child.start().map_err(err)?;
            r.recv_bytes().map_err(err)?;
            let dt = t0.elapsed();
            child.join().map_err(err)?;
            if i > 0 {
                times.push(dt.as_secs_f64() * 1e3);
            }
        }
        return Ok(Ok(os::median(&mut times)));
    }
    let mut times = Vec::with_capacity(samples);
    for i in 0..=samples {
        let (r, w) = os::pipe(false, true)?;
        let mut child = Process::new(first_line, (w.as_raw_fd(),));
        let t0 = Instant::now();
        child.start().map_err(err)?;
        drop(w);
        os::wait_signals(&r, 1)?;
        let dt = t0.elapsed();
        child.join().map_err(err)?;
        if i > 0 {
            times.push(dt.as_secs_f64() * 1e3);
        }
    }
    Ok(Ok(os::median(&mut times)))
}

fn start_join(p: &Params) -> io::Result<Outcome> {
    let n = p.get("procs", 100);
    use_forkserver(p)?;
    let mut warm = Process::new(nothing, ());
    warm.start().map_err(err)?;
    warm.join().map_err(err)?;
    let t0 = Instant::now();
    let mut children: Vec<Process> = (0..n).map(|_| Process::new(nothing, ())).collect();
    for c in &mut children {
        c.start().map_err(err)?;
    }
    for c in &mut children {
        c.join().map_err(err)?;
    }
    let dt = t0.elapsed();
    if let Some(bad) = children.iter().find(|c| c.exitcode() != Some(0)) {
        return Err(io::Error::other(format!(
            "a child exited with {:?}",
            bad.exitcode()
        )));
    }
    Ok(Ok(dt.as_secs_f64() * 1e3))
}

fn idle_rss(p: &Params) -> io::Result<Outcome> {
    let samples = p.get("samples", 5);
    let mut rss = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (r, w) = os::pipe(false, true)?;
        let mut child = Process::new(idle, (w.as_raw_fd(),));
        child.start().map_err(err)?;
        drop(w);
        os::wait_signals(&r, 1)?;
        let pid = child.pid().ok_or_else(|| io::Error::other("no pid"))?;
        rss.push(os::peak_rss_mib(pid)?);
        child.kill().map_err(err)?;
        child.join().map_err(err)?;
    }
    Ok(Ok(os::median(&mut rss)))
}

#[mproc::target]
fn echo(conn: Connection) {
    while let Ok(m) = conn.recv_bytes() {
        if conn.send_bytes(&m).is_err() {
            break;
        }
    }
}

/// `typed`: 0 raw bytes, 1 `Vec<u8>`, 2 `serde_bytes::ByteBuf`.
#[mproc::target]
fn sink(conn: Connection, n: usize, typed: usize) -> Result<(), mproc::Error> {
    conn.send_bytes(b"r")?;
    for _ in 0..n {
        match typed {
            0 => drop(conn.recv_bytes()?),
            1 => drop(conn.recv::<Vec<u8>>()?),
            _ => drop(conn.recv::<ByteBuf>()?),
        }
    }
    conn.send_bytes(b"k")
}

fn pipe_rt(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 20_000);
    let size = p.get("size", 64);
    if p.flag("pinned") {
        os::pin_to_one_cpu()?;
    }
    let (a, b) = mproc::pipe(true).map_err(err)?;
    let mut child = Process::new(echo, (b,));
    child.start().map_err(err)?;
    let msg = vec![0x5au8; size];
    let round_trip = || -> mproc::Result<()> {
        a.send_bytes(&msg)?;
        a.recv_bytes()?;
        Ok(())
    };
    for _ in 0..iters / 10 {
        round_trip().map_err(err)?;
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        round_trip().map_err(err)?;
    }
    let dt = t0.elapsed();
    a.close();
    child.join().map_err(err)?;
    Ok(Ok(dt.as_secs_f64() * 1e6 / iters as f64))
}

fn pipe_bulk(p: &Params) -> io::Result<Outcome> {
    let msgs = p.get("msgs", 500);
    let size = p.get("size", 1 << 20);
    let typed = p.get("typed", 0);
    let (a, b) = mproc::pipe(true).map_err(err)?;
    let mut child = Process::new(sink, (b, msgs, typed));
    child.start().map_err(err)?;
    let msg = vec![0x5au8; size];
    let buf = ByteBuf::from(msg.clone());
    a.recv_bytes().map_err(err)?;
    let t0 = Instant::now();
    for _ in 0..msgs {
        match typed {
            0 => a.send_bytes(&msg),
            1 => a.send(&msg),
            _ => a.send(&buf),
        }
        .map_err(err)?;
    }
    a.recv_bytes().map_err(err)?;
    let dt = t0.elapsed();
    child.join().map_err(err)?;
    if child.exitcode() != Some(0) {
        return Err(io::Error::other("the receiving child failed"));
    }
    Ok(Ok((msgs * size) as f64 / dt.as_secs_f64() / 1e9))
}

/// Producers put `n` items of `size` bytes each (`ByteBuf`: Rust's
/// `bytes`).
#[mproc::target]
fn q_producer(
    q: Queue<ByteBuf>,
    ready: RawFd,
    gate: RawFd,
    n: usize,
    size: usize,
) -> Result<(), mproc::Error> {
    let item = ByteBuf::from(vec![0x5au8; size]);
    os::signal(ready);
    os::wait_gate(gate);
    for _ in 0..n {
        q.put(item.clone())?;
    }
    Ok(())
}

#[mproc::target]
fn q_consumer(
    q: Queue<ByteBuf>,
    ready: RawFd,
    gate: RawFd,
    done: RawFd,
    n: usize,
) -> Result<(), mproc::Error> {
    os::signal(ready);
    os::wait_gate(gate);
    for _ in 0..n {
        q.get()?;
    }
    os::signal(done);
    Ok(())
}

fn queue_items(p: &Params) -> io::Result<Outcome> {
    let items = p.get("items", 200_000);
    let size = p.get("size", 64);
    let producers = p.get("producers", 1).max(1);
    let consumers = p.get("consumers", 1).max(1);
    let q = Queue::<ByteBuf>::new(p.get("maxsize", 0)).map_err(err)?;
    let gate = floor::Gate::new(producers + consumers)?;
    let (ready, gate_r, done) = (
        gate.ready_w.as_raw_fd(),
        gate.gate_r.as_raw_fd(),
        gate.done_w.as_raw_fd(),
    );
    let mut children = Vec::new();
    for i in 0..producers {
        let n = floor::share(items, producers, i);
        children.push(Process::new(
            q_producer,
            (q.clone(), ready, gate_r, n, size),
        ));
    }
    for i in 0..consumers {
        let n = floor::share(items, consumers, i);
        children.push(Process::new(
            q_consumer,
            (q.clone(), ready, gate_r, done, n),
        ));
    }
    for c in &mut children {
        c.start().map_err(err)?;
    }
    let secs = gate.run(consumers)?;
    for c in &mut children {
        c.join().map_err(err)?;
        if c.exitcode() != Some(0) {
            return Err(io::Error::other(format!(
                "a queue child exited with {:?}",
                c.exitcode()
            )));
        }
    }
    drop(q);
    Ok(Ok(items as f64 / secs))
}
