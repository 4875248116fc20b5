//! The logging, child-initializer and start-method fixture:
//! `log_to_stderr`, `set_child_initializer` and `set_start_method` change
//! the whole process (a global subscriber, the initializer every later
//! child runs, the forkserver), so each scenario runs in a process of its
//! own. `mproc-logging <scenario>`; `tests/logging.rs` and
//! `tests/forkserver.rs` read its stdout and stderr.

use std::sync::Mutex;

use mproc::{Pool, Process};
use tracing::Level;

/// What ran in this process, in order (the initializers and the target).
static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn note(what: &str) {
    if let Ok(mut o) = ORDER.lock() {
        o.push(what.to_string());
    }
}

fn order() -> String {
    ORDER.lock().map(|o| o.join(",")).unwrap_or_default()
}

#[mproc::target]
fn init(tag: String) {
    note(&tag);
}

#[mproc::target]
fn init_panics() {
    panic!("the initializer refuses");
}

#[mproc::target]
fn init_fails() -> Result<(), String> {
    Err("no config".into())
}

/// Logs at every level, then starts a grandchild that logs too.
#[mproc::target]
fn chatty(word: String) {
    tracing::error!("e {word}");
    tracing::warn!("w {word}");
    tracing::info!(n = 3, "i {word}");
    tracing::debug!("d {word}");
    tracing::trace!("t {word}");
    let mut g = Process::new(grandchild, ());
    if g.start().and_then(|_| g.join()).is_err() {
        std::process::exit(3);
    }
}

#[mproc::target]
fn grandchild() {
    tracing::info!("grand");
}

#[mproc::target]
fn logs_once() -> u32 {
    tracing::info!("from the child");
    std::process::id()
}

#[mproc::target]
fn print_order() {
    note("target");
    println!("process: {}", order());
}

#[mproc::target]
fn get_order() -> String {
    note("target");
    order()
}

#[mproc::target]
fn nested_order() -> String {
    note("target");
    let inner = mproc::spawn(get_order, ())
        .and_then(|h| h.join())
        .unwrap_or_else(|e| format!("error {e}"));
    format!("{} / {inner}", order())
}

#[mproc::target]
fn pool_order(_x: u32) -> String {
    note("task");
    order()
}

/// The OS parent of this process (the forkserver, for a forked child).
#[mproc::target]
fn os_parent() -> u32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(") ")?.1.to_string();
            after.split(' ').nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

#[mproc::target]
fn long_sleep() {
    std::thread::sleep(std::time::Duration::from_secs(100));
}

fn main_scenario(scenario: &str) -> mproc::Result<()> {
    match scenario {
        // A child's events reach stderr as `[LEVEL/Process-1] message`,
        // at INFO and above only; so do this process's and a grandchild's.
        "log" => {
            mproc::log_to_stderr(Level::INFO);
            tracing::info!("in main");
            tracing::debug!("main debug");
            let mut p = Process::new(chatty, ("x".to_string(),));
            p.start()?;
            p.join()?;
            println!("exitcode {:?}", p.exitcode());
        }
        // Started before `log_to_stderr`: nothing is logged by this child;
        // a later one logs.
        "log-later" => {
            mproc::spawn(logs_once, ())?.join()?;
            mproc::log_to_stderr(Level::WARN);
            mproc::spawn(logs_once, ())?.join()?;
            mproc::log_to_stderr(Level::INFO);
            let pid = mproc::spawn(logs_once, ())?.join()?;
            println!("last child {pid}");
        }
        // The program installed its own global subscriber first (one that
        // drops everything): no panic, this process's events go to it,
        // children log through mproc's.
        "preinstalled" => {
            tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())
                .map_err(|e| mproc::Error::bootstrap(e.to_string()))?;
            mproc::log_to_stderr(Level::INFO);
            tracing::info!("in main");
            mproc::spawn(logs_once, ())?.join()?;
            println!("done");
        }
        // The child initializer runs before the target in a Process, a
        // spawned child (and its own child), and a Pool worker, before
        // the Pool's initializer; not in this process.
        "init-order" => {
            mproc::set_child_initializer(init, ("child-init".to_string(),))?;
            let mut p = Process::new(print_order, ());
            p.start()?;
            p.join()?;
            println!("spawn: {}", mproc::spawn(nested_order, ())?.join()?);
            let mut pool = Pool::builder()
                .processes(1)
                .initializer(init, ("pool-init".to_string(),))
                .build()?;
            println!("pool: {}", pool.apply(pool_order, (1,))?);
            pool.close();
            pool.join()?;
            // Replaced: later children run the new one.
            mproc::set_child_initializer(init, ("second".to_string(),))?;
            println!("replaced: {}", mproc::spawn(get_order, ())?.join()?);
            println!("main: {}", order());
        }
        // A failing initializer: the child does not start, join says why.
        "init-panics" | "init-fails" => {
            if scenario == "init-panics" {
                mproc::set_child_initializer(init_panics, ())?;
            } else {
                mproc::set_child_initializer(init_fails, ())?;
            }
            let mut p = Process::new(print_order, ());
            p.start()?;
            println!("process join: {:?}", p.join().map_err(|e| e.to_string()));
            println!("process exitcode: {:?}", p.exitcode());
            println!(
                "spawn join: {:?}",
                mproc::spawn(get_order, ())
                    .and_then(|h| h.join())
                    .map_err(|e| e.to_string())
            );
            let mut pool = Pool::new(1)?;
            println!(
                "pool apply: {:?}",
                pool.apply(pool_order, (1,)).map_err(|e| e.to_string())
            );
            let _ = pool.terminate();
        }
        // The forkserver dies with its parent: prints the server's pid and
        // a forked child's, then waits to be killed (SIGKILL, by the test).
        "forkserver-orphan" => {
            mproc::set_start_method(mproc::StartMethod::Forkserver)?;
            let server = mproc::spawn(os_parent, ())?.join()?;
            let mut child = Process::new(long_sleep, ());
            child.start()?;
            println!("server {server}");
            println!("child {}", child.pid().unwrap_or(0));
            println!("ready");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_secs(100));
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    main_scenario(&scenario)
}
