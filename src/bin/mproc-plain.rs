//! A program WITHOUT `#[mproc::main]` or `mproc::init()`: a plain `main`,
//! as a new user writes it. The hardening tests (tests/harden.rs) run it
//! as a whole process: `mproc-plain <scenario> <path>`.

use std::io::BufRead;

use mproc::Process;

/// Writes `path` (after `delay_ms`, so that it is still running when
/// `main` has returned).
#[mproc::target]
fn write_file(path: String, delay_ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    if let Err(e) = std::fs::write(&path, b"done") {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(3);
    }
}

/// Reports whether the entry token is visible in this process's initial
/// environment block, as other processes read it (`/proc/self/environ`).
#[mproc::target]
fn report_environ(path: String) {
    let found = match std::fs::read("/proc/self/environ") {
        Ok(block) => {
            if block.windows(17).any(|w| w == b"MPROC_ENTRY_TOKEN") {
                "token-visible"
            } else {
                "token-gone"
            }
        }
        Err(_) => "no-procfs",
    };
    let _ = std::fs::write(&path, found);
}

/// Panics with `message`.
#[mproc::target]
fn panics(message: String) -> u32 {
    panic!("{message}");
}

/// Panics with `message` (a `Process` target).
#[mproc::target]
fn panics_in_process(message: String) {
    panic!("{message}");
}

fn run(scenario: &str, path: &str) -> mproc::Result<()> {
    match scenario {
        // Item 1: three children, no join, `main` returns at once (one
        // launch is still in flight, one child still runs).
        "three" => {
            for (i, delay) in [0u64, 0, 500].into_iter().enumerate() {
                Process::new(write_file, (format!("{path}/child-{i}"), delay)).start()?;
            }
        }
        // Item 7: this program's file is deleted (as a rebuild or an
        // upgrade replaces it), then it starts a child.
        "replace-self" => {
            let exe = std::env::current_exe()?;
            if std::env::consts::OS == "linux" {
                // A rebuild: the file is unlinked and a new one written.
                std::fs::remove_file(&exe)?;
                std::fs::write(&exe, b"#!/bin/sh\nexit 99\n")?;
            } else {
                // Windows does not delete a running executable, but an
                // upgrade may rename it away.
                let mut old = exe.clone().into_os_string();
                old.push(".old");
                std::fs::rename(&exe, &old)?;
            }
            let mut p = Process::new(write_file, (format!("{path}/after-replace"), 0));
            p.start()?;
            p.join()?;
            println!("exitcode {:?}", p.exitcode());
        }
        // Item 3: a child started (the runtime directory exists), then
        // wait for a line on stdin, then another child.
        "hold" => {
            let mut p = Process::new(write_file, (format!("{path}/first"), 0));
            p.start()?;
            p.join()?;
            println!("ready");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let mut p = Process::new(write_file, (format!("{path}/second"), 0));
            p.start()?;
            p.join()?;
            println!("exitcode {:?}", p.exitcode());
        }
        // Item 9: a child checks its own /proc/self/environ.
        "environ" => {
            let mut p = Process::new(report_environ, (path.to_string(),));
            p.start()?;
            p.join()?;
            println!("exitcode {:?}", p.exitcode());
        }
        // Item 10: a child's panic names the process, on stderr and in
        // `spawn`'s error; the handle's Debug names it too.
        "panic" => {
            let mut p =
                Process::new(panics_in_process, ("deliberate".to_string(),)).with_name("p1");
            p.start()?;
            p.join()?;
            println!("p1 pid {:?} exitcode {:?}", p.pid(), p.exitcode());
            let h = mproc::spawn(panics, ("also deliberate".to_string(),))?;
            println!("handle {h:?} pid {}", h.pid());
            match h.join() {
                Err(e) => println!("error: {e}"),
                Ok(v) => println!("value {v}"),
            }
        }
        // Item 2: the token must not reach a privileged process's entry.
        "main-ran" => println!("main ran"),
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let path = std::env::args().nth(2).unwrap_or_default();
    if let Err(e) = run(&scenario, &path) {
        eprintln!("mproc-plain {scenario}: {e}");
        std::process::exit(1);
    }
}
