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

/// Appends a byte to `path` every 20 ms for up to 100 s: a liveness signal
/// the tests read the same way on every OS.
#[mproc::target]
fn heartbeat(path: String) {
    use std::io::Write;
    for _ in 0..5000 {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(b".");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a daemonic heartbeat child, then blocks.
#[mproc::target]
fn parent_of_daemon(path: String) {
    let mut d = Process::new(heartbeat, (path,)).with_daemon(true);
    if d.start().is_err() {
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_secs(100));
}

fn wait_for_heartbeat(path: &str) {
    let t = std::time::Instant::now();
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0
        && t.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reports an error with its message (`Display`), as a program that
/// talks to people does: `mproc::Error`'s `Debug` is the derived one,
/// which a `main` returning `Result` would print.
#[mproc::main]
fn main() -> std::process::ExitCode {
    match scenario() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn scenario() -> mproc::Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let path = std::env::args().nth(2).unwrap_or_default();
    match scenario.as_str() {
        // Checklist 15: a 1 s child and a 100 s daemon (a heartbeat on
        // `path`): exit after ~1 s.
        "exit-procedure" => {
            let mut normal = Process::new(sleeper, (1.0,));
            let mut daemon = Process::new(heartbeat, (path.clone(),)).with_daemon(true);
            normal.start()?;
            daemon.start()?;
            wait_for_heartbeat(&path);
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
        // A parent (this process's child) with a daemonic grandchild (a
        // heartbeat on `path`); the parent is killed outright (SIGKILL /
        // TerminateProcess) and the test checks the heartbeat stops.
        "daemon-grandchild" => {
            let mut p = Process::new(parent_of_daemon, (path.clone(),));
            p.start()?;
            wait_for_heartbeat(&path);
            let killed_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            p.kill()?;
            p.join()?;
            println!("parent exitcode {:?}", p.exitcode());
            println!("killed at {} ms", killed_at.as_millis());
        }
        // Makes every kind of endpoint (a runtime directory with control
        // sockets, a queue broker's socket), then panics in main: the
        // test checks that none is left behind.
        "panic-with-endpoints" => {
            println!("pid {}", std::process::id());
            let q = mproc::Queue::<u32>::new(0)?;
            q.put(1).map_err(mproc::Error::from)?;
            let mut p = Process::new(hello, ("world".to_string(),));
            p.start()?;
            p.join()?;
            let mut daemon = Process::new(sleeper, (100.0,)).with_daemon(true);
            daemon.start()?;
            panic!("a deliberate panic in main, with a queue and children");
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}
