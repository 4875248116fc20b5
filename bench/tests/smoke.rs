//! Keeps `cargo xtask bench` from rotting: runs its driver (xtask/src/bench/
//! and xtask/src/util.rs, included here by path, std only) in check-only mode on the debug binary
//! cargo already built for this test — every figure, every contender (CPython
//! too when python3 is there), a handful of iterations, one repetition. It
//! asserts that the harness works and prints its table, nothing about speed.

#[allow(dead_code)]
#[path = "../../xtask/src/bench/mod.rs"]
mod bench;
// The driver's `crate::util` (workspace root, running cargo).
#[allow(dead_code)]
#[path = "../../xtask/src/util.rs"]
mod util;

use std::path::PathBuf;

#[test]
fn check_only_run_prints_the_table_and_writes_json() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("mproc-bench-smoke-{}", std::process::id()));
    let config = bench::Config::new(
        bench::Mode::CheckOnly,
        PathBuf::from(env!("CARGO_BIN_EXE_mproc-bench")),
        root.join("python").join("mp_bench.py"),
        Some(out.clone()),
    );
    let report = bench::drive(&config).expect("the bench harness runs");
    println!("{}", report.table);
    assert!(
        report.failures.is_empty(),
        "contender runs failed: {:#?}",
        report.failures
    );
    let table = &report.table;
    assert!(table.starts_with("| figure"), "{table}");
    for figure in [
        "spawn → first line",
        "start+join",
        "Pipe 64 B round trip",
        "Pipe 1 MiB",
        "Queue 64 B, 1P/1C",
        "Queue 64 B, 4P/4C",
        "Queue 1 MiB",
        "peak RSS of an idle child",
    ] {
        assert!(table.contains(figure), "no row {figure:?} in\n{table}");
    }
    assert!(!table.contains("FAILED"), "{table}");
    // Issue 18's cluster rows: measured with a cluster (SLURM_CONF), else
    // NA with the reason, never a failure.
    assert!(table.contains("Slurm Pool(4) start"), "{table}");
    if std::env::var_os("SLURM_CONF").is_none() {
        assert!(
            table.contains("n/a (no Slurm cluster: SLURM_CONF not set"),
            "{table}"
        );
    }
    let written = std::fs::read_to_string(out.join("check-only.json")).expect("JSON written");
    assert_eq!(report.written, vec![out.join("check-only.json")]);
    assert!(written.contains("\"figures\": ["), "{written}");
    assert!(written.contains("\"spawn_first_line\""), "{written}");
    let _ = std::fs::remove_dir_all(&out);
}
