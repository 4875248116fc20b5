//! A `#[mproc::main]` that fails — `mproc-failing-main panic` panics,
//! `mproc-failing-main err` returns `Err` — while a non-daemonic child it
//! started and did not join blocks on a queue that nobody feeds. As in
//! CPython, the exit procedure waits for that child; it first names it on
//! stderr. `tests/exit_after_failure.rs` runs it and ends the child.

use std::io::Write;

use mproc::{Process, Queue};

#[mproc::target]
fn wait_for_an_item(q: Queue<u32>) {
    let _ = q.get();
}

#[mproc::main]
fn main() -> Result<(), String> {
    let how = std::env::args().nth(1).unwrap_or_default();
    let q = Queue::<u32>::new(0).map_err(|e| e.to_string())?;
    let mut p = Process::new(wait_for_an_item, (q.clone(),)).with_name("p1");
    p.start().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "started {}", p.pid().unwrap_or(0));
    let _ = out.flush();
    if how == "panic" {
        panic!("main's own panic");
    }
    Err("main's own error".to_string())
}
