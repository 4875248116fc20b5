//! The floor: each figure with nothing but std and libc. A child is this
//! binary re-executed (as mproc's are: `Command`, stdin from /dev/null)
//! with its role in `MPROC_BENCH_FLOOR`, talking over descriptors it
//! inherited; messages carry CPython's 4-byte length prefix.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::os;
use crate::{Contender, Outcome, Params};

pub const CONTENDER: Contender = Contender {
    spawn_first_line,
    start_join,
    idle_rss,
    pipe_rt,
    pipe_bulk,
    queue_items,
    pool: crate::pool_side::reference,
};

const ROLE_ENV: &str = "MPROC_BENCH_FLOOR";

fn start(role: &str) -> io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        .spawn()
}

fn finish(mut child: Child) -> io::Result<()> {
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("floor child failed: {status}")))
    }
}

fn spawn_first_line(p: &Params) -> io::Result<Outcome> {
    let samples = p.get("samples", 200);
    let mut times = Vec::with_capacity(samples);
    for i in 0..=samples {
        let (r, w) = os::pipe(false, true)?;
        let role = format!("line {}", w.as_raw_fd());
        let t0 = Instant::now();
        let child = start(&role)?;
        drop(w);
        os::wait_signals(&r, 1)?;
        let dt = t0.elapsed();
        finish(child)?;
        // The first one warms the page cache and is not counted.
        if i > 0 {
            times.push(dt.as_secs_f64() * 1e3);
        }
    }
    Ok(Ok(os::median(&mut times)))
}

fn start_join(p: &Params) -> io::Result<Outcome> {
    let n = p.get("procs", 100);
    finish(start("exit")?)?;
    let t0 = Instant::now();
    let children = (0..n)
        .map(|_| start("exit"))
        .collect::<io::Result<Vec<_>>>()?;
    for c in children {
        finish(c)?;
    }
    Ok(Ok(t0.elapsed().as_secs_f64() * 1e3))
}

fn idle_rss(p: &Params) -> io::Result<Outcome> {
    let samples = p.get("samples", 5);
    let mut rss = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (r, w) = os::pipe(false, true)?;
        let mut child = start(&format!("idle {}", w.as_raw_fd()))?;
        drop(w);
        os::wait_signals(&r, 1)?;
        rss.push(os::peak_rss_mib(child.id())?);
        child.kill()?;
        child.wait()?;
    }
    Ok(Ok(os::median(&mut rss)))
}

fn pipe_rt(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 20_000);
    let size = p.get("size", 64);
    if p.flag("pinned") {
        os::pin_to_one_cpu()?;
    }
    let (a, b) = os::socketpair()?;
    let child = start(&format!("echo {}", b.as_raw_fd()))?;
    drop(b);
    let mut conn = File::from(a);
    let msg = os::frame(size);
    let mut back = vec![0u8; msg.len()];
    let mut round_trip = |conn: &mut File| -> io::Result<()> {
        conn.write_all(&msg)?;
        conn.read_exact(&mut back)
    };
    for _ in 0..iters / 10 {
        round_trip(&mut conn)?;
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        round_trip(&mut conn)?;
    }
    let dt = t0.elapsed();
    drop(conn);
    finish(child)?;
    Ok(Ok(dt.as_secs_f64() * 1e6 / iters as f64))
}

fn pipe_bulk(p: &Params) -> io::Result<Outcome> {
    // Untyped bytes are the floor for the typed row as well.
    let msgs = p.get("msgs", 500);
    let size = p.get("size", 1 << 20);
    let (a, b) = os::socketpair()?;
    let child = start(&format!("sink {} {msgs}", b.as_raw_fd()))?;
    drop(b);
    let mut conn = File::from(a);
    let msg = os::frame(size);
    let mut ack = [0u8; 1];
    conn.read_exact(&mut ack)?;
    let t0 = Instant::now();
    for _ in 0..msgs {
        conn.write_all(&msg)?;
    }
    conn.read_exact(&mut ack)?;
    let dt = t0.elapsed();
    finish(child)?;
    Ok(Ok((msgs * size) as f64 / dt.as_secs_f64() / 1e9))
}

/// One shared OS pipe, as CPython's Queue has: every producer writes whole
/// records (a record of at most PIPE_BUF bytes is written atomically), every
/// consumer reads whole records. One producer and one consumer of records
/// over PIPE_BUF use a socketpair instead (the raw-socket floor).
fn queue_items(p: &Params) -> io::Result<Outcome> {
    let items = p.get("items", 200_000);
    let size = p.get("size", 64);
    let producers = p.get("producers", 1).max(1);
    let consumers = p.get("consumers", 1).max(1);
    if consumers > 1 && size + 4 > libc::PIPE_BUF {
        return Ok(Err(crate::NotAvailable(
            "several consumers need records of at most PIPE_BUF bytes".into(),
        )));
    }
    let (qr, qw) = if producers == 1 && consumers == 1 && size + 4 > libc::PIPE_BUF {
        // One producer, one consumer, records too big for the pipe's
        // atomic writes anyway: the raw floor is a socketpair, the fastest
        // byte channel between two processes here (issue 14 item 6; a pipe
        // floor hid the gap).
        let (a, b) = os::socketpair()?;
        os::set_inheritable(&a)?;
        (b, a)
    } else {
        os::pipe(true, true)?
    };
    let gate = Gate::new(producers + consumers)?;
    let mut children = Vec::new();
    for i in 0..producers {
        let n = share(items, producers, i);
        children.push(start(&format!(
            "qprod {} {} {} {n} {size}",
            qw.as_raw_fd(),
            gate.ready_w.as_raw_fd(),
            gate.gate_r.as_raw_fd()
        ))?);
    }
    for i in 0..consumers {
        let n = share(items, consumers, i);
        children.push(start(&format!(
            "qcons {} {} {} {} {n} {size}",
            qr.as_raw_fd(),
            gate.ready_w.as_raw_fd(),
            gate.gate_r.as_raw_fd(),
            gate.done_w.as_raw_fd()
        ))?);
    }
    drop((qr, qw));
    let secs = gate.run(consumers)?;
    for c in children {
        finish(c)?;
    }
    Ok(Ok(items as f64 / secs))
}

/// Item `i`'s share of `items` split `ways` ways.
pub fn share(items: usize, ways: usize, i: usize) -> usize {
    items / ways + usize::from(i < items % ways)
}

/// The start line and the finish line of a multi-process figure, made of
/// inherited pipes: every child says it is ready, waits for the gate to
/// open (its write end closed: EOF for all at once), and each consumer says
/// when it is done.
pub struct Gate {
    pub ready_w: OwnedFd,
    ready_r: OwnedFd,
    pub gate_r: OwnedFd,
    gate_w: OwnedFd,
    pub done_w: OwnedFd,
    done_r: OwnedFd,
    children: usize,
}

impl Gate {
    pub fn new(children: usize) -> io::Result<Gate> {
        let (ready_r, ready_w) = os::pipe(false, true)?;
        let (gate_r, gate_w) = os::pipe(true, false)?;
        let (done_r, done_w) = os::pipe(false, true)?;
        Ok(Gate {
            ready_w,
            ready_r,
            gate_r,
            gate_w,
            done_w,
            done_r,
            children,
        })
    }

    /// Waits for every child to be ready, opens the gate and returns the
    /// seconds until `consumers` said they are done.
    pub fn run(self, consumers: usize) -> io::Result<f64> {
        let Gate {
            ready_w,
            ready_r,
            gate_r,
            gate_w,
            done_w,
            done_r,
            children,
        } = self;
        drop((ready_w, gate_r, done_w));
        os::wait_signals(&ready_r, children)?;
        let t0 = Instant::now();
        drop(gate_w);
        os::wait_signals(&done_r, consumers)?;
        Ok(t0.elapsed().as_secs_f64())
    }
}

// ------------------------------------------------------------- children --

/// In a floor child (`MPROC_BENCH_FLOOR` set), plays its role and exits;
/// otherwise returns at once.
pub fn child_main() {
    let Some(role) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    let role = role.to_string_lossy().into_owned();
    let code = match play(&role) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("floor child {role:?}: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn play(role: &str) -> io::Result<()> {
    let words: Vec<&str> = role.split(' ').collect();
    let num = |i: usize| -> io::Result<usize> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad role {role:?}")))
    };
    let fd = |i: usize| -> io::Result<RawFd> { num(i).map(|n| n as RawFd) };
    match words[0] {
        "exit" => {}
        "line" => os::signal(fd(1)?),
        "idle" => {
            os::signal(fd(1)?);
            std::thread::sleep(os::IDLE);
        }
        "echo" => {
            // Buffered: one read takes header and payload together.
            let mut conn = os::adopt(fd(1)?);
            let mut reader = io::BufReader::with_capacity(1 << 16, conn.try_clone()?);
            let mut buf = Vec::new();
            let mut out = Vec::new();
            while os::read_frame(&mut reader, &mut buf)? {
                out.clear();
                out.extend_from_slice(&(buf.len() as u32).to_be_bytes());
                out.extend_from_slice(&buf);
                conn.write_all(&out)?;
            }
        }
        "sink" => {
            let mut conn = os::adopt(fd(1)?);
            let mut buf = Vec::new();
            conn.write_all(b"r")?;
            for _ in 0..num(2)? {
                if !os::read_frame(&mut conn, &mut buf)? {
                    return Err(io::Error::other("sender ended early"));
                }
            }
            conn.write_all(b"k")?;
        }
        "qprod" => {
            let mut q = os::adopt(fd(1)?);
            os::signal(fd(2)?);
            os::wait_gate(fd(3)?);
            let rec = os::frame(num(5)?);
            for _ in 0..num(4)? {
                q.write_all(&rec)?;
            }
        }
        "qcons" => {
            let mut q = os::adopt(fd(1)?);
            os::signal(fd(2)?);
            os::wait_gate(fd(3)?);
            let (n, size) = (num(5)?, num(6)?);
            let mut rec = vec![0u8; 4 + size];
            for _ in 0..n {
                if rec.len() <= libc::PIPE_BUF {
                    // A whole record in one read: other consumers read
                    // the same pipe.
                    let k = q.read(&mut rec)?;
                    if k != rec.len() {
                        return Err(io::Error::other(format!("short record: {k} bytes")));
                    }
                } else {
                    q.read_exact(&mut rec)?;
                }
            }
            os::signal(fd(4)?);
        }
        other => return Err(io::Error::other(format!("unknown role {other:?}"))),
    }
    Ok(())
}
