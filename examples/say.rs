//! The seed's second Process program: a target with two arguments.
//!
//! ```python
//! def say(name, task):
//!     print(f"say PID: {os.getpid()} with name: {name}, task: {task}")
//! p = multiprocessing.Process(target=say, args=("p1", "task1"))
//! ```

use mproc::Process;

#[mproc::target]
fn say(name: String, task: String) {
    println!(
        "say PID: {} with name: {name}, task: {task}",
        std::process::id()
    );
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    let mut p = Process::new(say, ("p1".to_string(), "task1".to_string()));
    p.start()?;
    p.join()?;
    Ok(())
}
