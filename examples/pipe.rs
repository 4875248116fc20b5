//! The seed's Pipe program: a duplex pipe between a parent and a worker.
//!
//! ```python
//! def worker(conn):
//!     print(f"worker pid: {os.getpid()}")
//!     message = conn.recv()
//!     print(f"worker received: {message}")
//!     conn.send("message from worker")
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = multiprocessing.Pipe()
//!     p = multiprocessing.Process(target=worker, args=(child_conn,))
//!     p.start()
//!     parent_conn.send("message from parent")
//!     response = parent_conn.recv()
//!     print(f"parent received response: {response}")
//!     parent_conn.close()
//!     p.join()
//! ```

use mproc::{Connection, Process};

#[mproc::target]
fn worker(conn: Connection) -> mproc::Result<()> {
    println!("worker pid: {}", std::process::id());
    let message: String = conn.recv()?;
    println!("worker received: {message}");
    conn.send("message from worker")?;
    conn.close();
    Ok(())
}

#[mproc::main]
fn main() -> mproc::Result<()> {
    let (parent_conn, child_conn) = mproc::pipe(true)?;
    let mut p = Process::new(worker, (child_conn,));
    p.start()?;
    parent_conn.send("message from parent")?;
    let response: String = parent_conn.recv()?;
    println!("parent received response: {response}");
    parent_conn.close();
    p.join()?;
    Ok(())
}
