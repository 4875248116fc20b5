//! Reliability under load and faults (docs/reliability.md lists each test
//! with what it proves).

use std::time::{Duration, Instant};

use mproc::Process;

mod common;
#[path = "common/sys/mod.rs"]
mod sys;
use common::{exit_with, nothing, sleeper};

/// Starts a child that exits with `code`, then exits with the child's
/// exitcode plus one.
#[mproc::target]
fn relay_exit(code: i32) {
    let mut p = Process::new(exit_with, (code,));
    if p.start().is_err() || p.join().is_err() {
        std::process::exit(100);
    }
    std::process::exit(p.exitcode().unwrap_or(100) + 1);
}

#[mproc::test]
fn exit_codes_are_exact_through_nested_spawns() -> mproc::Result<()> {
    for code in [0, 7, 41] {
        let mut p = Process::new(relay_exit, (code,));
        p.start()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(code + 1));
    }
    Ok(())
}

#[mproc::test]
fn join_timeout_is_neither_early_nor_late_nor_busy() -> mproc::Result<()> {
    let mut p = Process::new(sleeper, (30.0,));
    p.start()?;
    for ms in [50u64, 300, 700] {
        let cpu = sys::cpu_time();
        let t = Instant::now();
        p.join_timeout(Duration::from_millis(ms))?;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(ms),
            "returned early: {took:?} < {ms} ms"
        );
        assert!(
            took < Duration::from_millis(ms) + Duration::from_secs(2),
            "returned late: {took:?} for {ms} ms"
        );
        // Waiting is a blocking poll on the sentinel: other tests run in
        // parallel threads of this process, so allow their share, but a
        // busy loop would burn about the whole wait.
        // (Where the OS tells the CPU time: Unix.)
        if let (Some(cpu), Some(now)) = (cpu, sys::cpu_time()) {
            let used = now - cpu;
            assert!(
                used < took / 2 + Duration::from_millis(100),
                "busy wait: {used:?} CPU in {took:?}"
            );
        }
        assert!(p.is_alive()?);
    }
    p.kill()?;
    p.join()?;
    Ok(())
}

#[mproc::test]
fn a_thousand_processes_leak_nothing() -> mproc::Result<()> {
    // Warm up once so lazily created process-wide state (runtime dir,
    // parent pipe) is not counted as growth.
    let mut warm = Process::new(nothing, ());
    warm.start()?;
    warm.join()?;
    let before = sys::open_descriptors();
    let mut pids = Vec::new();
    for _wave in 0..20 {
        let mut wave: Vec<Process> = (0..50).map(|_| Process::new(nothing, ())).collect();
        for p in &mut wave {
            p.start()?;
        }
        for p in &mut wave {
            p.join()?;
            assert_eq!(p.exitcode(), Some(0));
            pids.extend(p.pid());
            p.close()?;
        }
    }
    assert_eq!(pids.len(), 1000);
    // Where the OS lists descriptors and zombies (Linux: /proc).
    if let (Some(before), Some(after)) = (before, sys::open_descriptors()) {
        // Other tests of this binary run in parallel and hold descriptors
        // of their own for a while: allow a small, bounded difference, far
        // below the 1,000+ a per-process leak would show.
        assert!(
            after <= before + 16,
            "descriptors grew from {before} to {after}"
        );
    }
    // Joined children are reaped: none is a zombie of ours.
    if let Some(zombies) = sys::zombie_children_among(&pids) {
        assert!(zombies.is_empty(), "zombie children: {zombies:?}");
    }
    Ok(())
}
