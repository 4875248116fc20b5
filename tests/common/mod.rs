//! Small targets shared by the integration tests (`mod common;`). A module
//! directory, so Cargo does not build it as a test binary of its own; each
//! test binary that includes it compiles and registers these targets anew.
//! Keep here only what every including binary uses (clippy runs with
//! `-D warnings`, so an unused item is an error).

use std::time::Duration;

#[mproc::target]
pub fn nothing() {}

#[mproc::target]
pub fn sleeper(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

#[mproc::target]
pub fn exit_with(code: i32) {
    std::process::exit(code);
}
