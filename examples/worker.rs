//! The seed's first Process program: several workers, each printing its
//! own PID and task.
//!
//! ```python
//! def worker(task):
//!     print(f"Worker PID: {os.getpid()} with task: {task}")
//! p = multiprocessing.Process(target=worker, args=(f"running {i} task",))
//! ```

use mproc::Process;

#[mproc::target]
fn worker(task: String) {
    println!("Worker PID: {} with task: {task}", std::process::id());
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    let mut processes = Vec::new();
    for i in 0..5 {
        // One argument: a one-element tuple, trailing comma as in Python.
        let mut p = Process::new(worker, (format!("running {i} task"),));
        p.start()?;
        processes.push(p);
    }
    for p in &mut processes {
        p.join()?;
    }
    Ok(())
}
