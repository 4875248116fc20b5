// The guide is `crates/mproc/guide.md`, inside this package so that
// `cargo package` carries it and docs.rs shows it; every Rust block in it
// is a doctest (`cargo test -p mproc --doc`).
#![doc = include_str!("../guide.md")]
