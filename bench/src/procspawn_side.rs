//! procspawn (crates.io) with its ipc-channel: the spawn figures and the
//! Pipe-like ones. It has no queue. Spawn figures signal on an inherited
//! descriptor, as the floor does.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcReceiver, IpcSender};
use serde_bytes::ByteBuf;

use crate::os;
use crate::{not_applicable, Contender, Outcome, Params};

pub const CONTENDER: Contender = Contender {
    spawn_first_line,
    start_join,
    idle_rss,
    pipe_rt,
    pipe_bulk,
    queue_items: not_applicable,
    pool: crate::pool_side::procspawn_pool,
};

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn spawn_first_line(p: &Params) -> io::Result<Outcome> {
    let samples = p.get("samples", 200);
    let mut times = Vec::with_capacity(samples);
    for i in 0..=samples {
        let (r, w) = os::pipe(false, true)?;
        let fd = w.as_raw_fd();
        let t0 = Instant::now();
        let child = procspawn::spawn(fd, |fd: RawFd| os::signal(fd));
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
    procspawn::spawn((), |()| ()).join().map_err(err)?;
    let t0 = Instant::now();
    let children: Vec<_> = (0..n).map(|_| procspawn::spawn((), |()| ())).collect();
    for c in children {
        c.join().map_err(err)?;
    }
    Ok(Ok(t0.elapsed().as_secs_f64() * 1e3))
}

fn idle_rss(p: &Params) -> io::Result<Outcome> {
    let samples = p.get("samples", 5);
    let mut rss = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (r, w) = os::pipe(false, true)?;
        let mut child = procspawn::spawn(w.as_raw_fd(), |fd: RawFd| {
            os::signal(fd);
            std::thread::sleep(os::IDLE);
        });
        drop(w);
        os::wait_signals(&r, 1)?;
        let pid = child.pid().ok_or_else(|| io::Error::other("no pid"))?;
        rss.push(os::peak_rss_mib(pid)?);
        child.kill().map_err(err)?;
    }
    Ok(Ok(os::median(&mut rss)))
}

fn pipe_rt(p: &Params) -> io::Result<Outcome> {
    let iters = p.get("iters", 20_000);
    let size = p.get("size", 64);
    if p.flag("pinned") {
        os::pin_to_one_cpu()?;
    }
    let (to_child, from_parent) = ipc::bytes_channel()?;
    let (to_parent, from_child) = ipc::bytes_channel()?;
    let child = procspawn::spawn(
        (from_parent, to_parent),
        |(rx, tx): (IpcBytesReceiver, IpcBytesSender)| {
            while let Ok(m) = rx.recv() {
                if m.is_empty() || tx.send(&m).is_err() {
                    break;
                }
            }
        },
    );
    let msg = vec![0x5au8; size];
    let round_trip = || -> io::Result<()> {
        to_child.send(&msg)?;
        from_child.recv().map_err(err)?;
        Ok(())
    };
    for _ in 0..iters / 10 {
        round_trip()?;
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        round_trip()?;
    }
    let dt = t0.elapsed();
    to_child.send(&[])?;
    child.join().map_err(err)?;
    Ok(Ok(dt.as_secs_f64() * 1e6 / iters as f64))
}

fn pipe_bulk(p: &Params) -> io::Result<Outcome> {
    let msgs = p.get("msgs", 500);
    let size = p.get("size", 1 << 20);
    let (ack_tx, ack_rx) = ipc::channel::<()>()?;
    let msg = vec![0x5au8; size];
    let t0;
    let child = match p.get("typed", 0) {
        0 => {
            let (tx, rx) = ipc::bytes_channel()?;
            let child = procspawn::spawn(
                (rx, ack_tx, msgs),
                |(rx, ack, n): (IpcBytesReceiver, IpcSender<()>, usize)| {
                    ack.send(()).expect("ready");
                    for _ in 0..n {
                        rx.recv().expect("recv");
                    }
                    ack.send(()).expect("ack");
                },
            );
            ack_rx.recv().map_err(err)?;
            t0 = Instant::now();
            for _ in 0..msgs {
                tx.send(&msg)?;
            }
            child
        }
        1 => {
            let (tx, rx) = ipc::channel::<Vec<u8>>()?;
            let child = procspawn::spawn(
                (rx, ack_tx, msgs),
                |(rx, ack, n): (IpcReceiver<Vec<u8>>, IpcSender<()>, usize)| {
                    ack.send(()).expect("ready");
                    for _ in 0..n {
                        rx.recv().expect("recv");
                    }
                    ack.send(()).expect("ack");
                },
            );
            ack_rx.recv().map_err(err)?;
            t0 = Instant::now();
            for _ in 0..msgs {
                tx.send(msg.clone()).map_err(err)?;
            }
            child
        }
        _ => {
            let (tx, rx) = ipc::channel::<ByteBuf>()?;
            let child = procspawn::spawn(
                (rx, ack_tx, msgs),
                |(rx, ack, n): (IpcReceiver<ByteBuf>, IpcSender<()>, usize)| {
                    ack.send(()).expect("ready");
                    for _ in 0..n {
                        rx.recv().expect("recv");
                    }
                    ack.send(()).expect("ack");
                },
            );
            let buf = ByteBuf::from(msg.clone());
            ack_rx.recv().map_err(err)?;
            t0 = Instant::now();
            for _ in 0..msgs {
                tx.send(buf.clone()).map_err(err)?;
            }
            child
        }
    };
    ack_rx.recv().map_err(err)?;
    let dt = t0.elapsed();
    child.join().map_err(err)?;
    Ok(Ok((msgs * size) as f64 / dt.as_secs_f64() / 1e9))
}
