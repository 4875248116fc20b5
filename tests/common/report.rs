//! A pool task that lets a test see which worker runs it and hold it
//! there (`tests/pool.rs`, `tests/pool_dispatch.rs`). A test binary
//! includes it with `#[path = "common/report.rs"] mod report;`.

use mproc::{Address, Client};

/// Connects to `addr`, tells its pid, and waits for a word from the test
/// (or the end of the connection) before it returns its pid.
#[mproc::target]
pub fn report_and_wait(addr: Address) -> u32 {
    let pid = std::process::id();
    if let Ok(conn) = Client::connect(&addr, None) {
        let _ = conn.send(&pid);
        let _ = conn.recv::<u8>();
    }
    pid
}
