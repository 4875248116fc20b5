//! A small mproc program the integration tests run as a whole process, for
//! what a test cannot do inside its own test binary: exit procedures,
//! parent death, entry faults. `mproc-fixture <scenario>`.

use std::time::Duration;

use mproc::Process;

#[mproc::target]
fn sleeper(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

#[mproc::target]
fn hello(word: String) {
    println!("hello {word} from {}", std::process::id());
}

/// Starts a daemonic grandchild, prints its pid and then blocks.
#[mproc::target]
fn parent_of_daemon() {
    let mut d = Process::new(sleeper, (100.0,)).with_daemon(true);
    if d.start().is_err() {
        std::process::exit(3);
    }
    println!("daemon-pid {}", d.pid().unwrap_or(0));
    std::thread::sleep(Duration::from_secs(100));
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    match scenario.as_str() {
        // Checklist 15: a 1 s child and a 100 s daemon: exit after ~1 s.
        "exit-procedure" => {
            let mut normal = Process::new(sleeper, (1.0,));
            let mut daemon = Process::new(sleeper, (100.0,)).with_daemon(true);
            normal.start()?;
            daemon.start()?;
            println!("daemon-pid {}", daemon.pid().unwrap_or(0));
            // main returns at once; #[mproc::main] joins `normal` and
            // terminates `daemon`.
        }
        // A child that prints, started and joined: the fault scenarios use it.
        "hello" => {
            let mut p = Process::new(hello, ("world".to_string(),));
            p.start()?;
            p.join()?;
            println!("exitcode {:?}", p.exitcode());
        }
        // A parent (this process's child) with a daemonic grandchild; the
        // test kills the parent outright and checks the daemon dies.
        "daemon-grandchild" => {
            let mut p = Process::new(parent_of_daemon, ());
            p.start()?;
            println!("parent-pid {}", p.pid().unwrap_or(0));
            p.join()?;
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}
