//! `cargo xtask bench [--quick] [--check-only] [--no-python] [--reps N] [--only ID,..]`:
//! mproc side by side with the OS floor, CPython's multiprocessing and
//! procspawn, in one run (docs/benchmarks.md).
//!
//! Builds `mproc-bench` (release; debug with `--check-only`), then for each
//! figure runs every contender once per repetition, interleaved (floor,
//! mproc, procspawn, CPython spawn, forkserver, fork; again...), each run a
//! fresh process of the same tree that prints one `RESULT <value>` line
//! (bench/src/main.rs, bench/python/mp_bench.py). Prints one table with the
//! medians, the ratios and the goals, and writes the same as JSON to
//! `target/bench/<UTC time>.json` and `target/bench/latest.json`.
//!
//! - `--quick`: fewer samples per repetition (under 2 minutes on 2 CPUs);
//! - `--check-only`: a smoke run with a handful of iterations and one
//!   repetition, to keep the harness from rotting; its numbers mean nothing
//!   and it writes `target/bench/check-only.json` only. bench/tests/smoke.rs
//!   runs the same code (this file, included by path) on the debug binary.
//!
//! Std only, as the rest of xtask: the JSON is written by hand.
//! `figures.rs` says what is measured and the goals; `report.rs` makes the
//! table and the JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod figures;
mod report;

use crate::util::{cargo, root};
use figures::{rows, Cell, Row, RowResult, Who};
use report::{cell_text, json, table};

/// How much work each repetition does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Full,
    Quick,
    CheckOnly,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::CheckOnly => "check-only",
        }
    }

    fn reps(self) -> usize {
        match self {
            Mode::Full | Mode::Quick => 5,
            Mode::CheckOnly => 1,
        }
    }

    /// The longest one contender's run may take before it counts as hung.
    fn run_limit(self) -> Duration {
        match self {
            Mode::Full => Duration::from_secs(300),
            Mode::Quick => Duration::from_secs(120),
            Mode::CheckOnly => Duration::from_secs(60),
        }
    }

    /// `full`, `quick` or `check` by mode.
    fn pick(self, full: usize, quick: usize, check: usize) -> usize {
        match self {
            Mode::Full => full,
            Mode::Quick => quick,
            Mode::CheckOnly => check,
        }
    }
}

/// Everything one run needs.
pub struct Config {
    pub mode: Mode,
    /// The built `mproc-bench` binary.
    pub bench_bin: PathBuf,
    /// `bench/python/mp_bench.py`.
    pub script: PathBuf,
    /// The Python interpreter and its version, when there is one.
    pub python: Option<(String, String)>,
    /// Where the JSON goes (`None`: nowhere).
    pub out_dir: Option<PathBuf>,
    /// Repetitions (default: the mode's).
    pub reps: Option<usize>,
    /// Only the figures whose id contains one of these.
    pub only: Vec<String>,
    /// The command line, for the record.
    pub command: String,
}

impl Config {
    /// A run of `bench_bin` in `mode`, with python3 if it is there.
    pub fn new(
        mode: Mode,
        bench_bin: PathBuf,
        script: PathBuf,
        out_dir: Option<PathBuf>,
    ) -> Config {
        Config {
            mode,
            bench_bin,
            script,
            python: find_python("python3"),
            out_dir,
            reps: None,
            only: Vec::new(),
            command: format!("mproc-bench harness, {} mode", mode.name()),
        }
    }
}

/// What a run produced.
pub struct Report {
    pub table: String,
    /// Where the JSON was written.
    pub written: Vec<PathBuf>,
    /// Contender runs that failed (the table says FAILED there).
    pub failures: Vec<String>,
}

// ------------------------------------------------------------------ run --

/// `cargo xtask bench [...]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut mode = Mode::Full;
    let mut check_only = false;
    let mut no_python = false;
    let mut reps = None;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--check-only" => check_only = true,
            "--no-python" => no_python = true,
            "--reps" => {
                let n = it.next().and_then(|s| s.parse::<usize>().ok());
                reps = Some(
                    n.filter(|&n| n > 0)
                        .ok_or("--reps takes a positive number")?,
                );
            }
            "--only" => {
                let list = it.next().ok_or("--only takes a list of figure ids")?;
                only.extend(list.split(',').map(str::to_string));
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}: usage `cargo xtask bench [--quick] \
                     [--check-only] [--no-python] [--reps N] [--only ID,..]`"
                ))
            }
        }
    }
    if check_only {
        mode = Mode::CheckOnly;
    }
    let root = root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut build = vec!["build", "-p", "mproc-bench"];
    if mode != Mode::CheckOnly {
        build.push("--release");
    }
    eprintln!("xtask bench: cargo {}", build.join(" "));
    cargo(&build)?;
    let profile = if mode == Mode::CheckOnly {
        "debug"
    } else {
        "release"
    };
    let mut config = Config::new(
        mode,
        target.join(profile).join("mproc-bench"),
        root.join("bench").join("python").join("mp_bench.py"),
        Some(target.join("bench")),
    );
    if no_python {
        config.python = None;
    }
    config.reps = reps;
    config.only = only;
    config.command = std::iter::once("cargo xtask bench".to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let report = drive(&config)?;
    println!("{}", report.table);
    for p in &report.written {
        eprintln!("xtask bench: wrote {}", p.display());
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} contender run(s) failed:\n  {}",
            report.failures.len(),
            report.failures.join("\n  ")
        ))
    }
}

/// Runs every figure, interleaving the contenders, and makes the table and
/// the JSON (and writes the JSON when `out_dir` is set).
pub fn drive(cfg: &Config) -> Result<Report, String> {
    if !cfg.bench_bin.is_file() {
        return Err(format!("no bench binary at {}", cfg.bench_bin.display()));
    }
    let started = Instant::now();
    let stamp = utc_stamp(SystemTime::now());
    let load_before = loadavg();
    let reps = cfg.reps.unwrap_or(cfg.mode.reps());
    let all = rows();
    let chosen: Vec<&Row> = all
        .iter()
        .filter(|r| cfg.only.is_empty() || cfg.only.iter().any(|o| r.id.contains(o.as_str())))
        .collect();
    if chosen.is_empty() {
        return Err(format!("no figure matches --only {:?}", cfg.only));
    }
    match &cfg.python {
        Some((py, version)) => eprintln!("xtask bench: CPython: {py} ({version})"),
        None => eprintln!("xtask bench: CPython: missing (no python3): its columns say so"),
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (i, row) in chosen.iter().enumerate() {
        let t = Instant::now();
        let params = (row.params)(cfg.mode);
        let mut cells: BTreeMap<Who, Cell> = BTreeMap::new();
        for _ in 0..reps {
            for &who in row.who {
                if matches!(
                    cells.get(&who),
                    Some(Cell::Na(_) | Cell::Missing | Cell::Failed(_))
                ) {
                    continue;
                }
                let cell = match run_contender(cfg, who, row.figure, &params) {
                    Outcome::Value(v) => {
                        let v = v * row.scale;
                        match cells.entry(who).or_insert_with(|| Cell::Values(Vec::new())) {
                            Cell::Values(vs) => vs.push(v),
                            _ => unreachable!("skipped above"),
                        }
                        continue;
                    }
                    Outcome::Na(why) => Cell::Na(why),
                    Outcome::Missing => Cell::Missing,
                    Outcome::Failed(why) => {
                        failures.push(format!("{} / {}: {why}", row.id, who.key()));
                        Cell::Failed(why)
                    }
                };
                cells.insert(who, cell);
            }
        }
        let result = RowResult { row, cells };
        eprintln!(
            "xtask bench: [{}/{}] {}: {} ({:.1} s)",
            i + 1,
            chosen.len(),
            row.title(cfg.mode),
            row.who
                .iter()
                .map(|&w| format!("{} {}", w.header(), cell_text(&result, w)))
                .collect::<Vec<_>>()
                .join(", "),
            t.elapsed().as_secs_f64()
        );
        results.push(result);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load = [load_before, loadavg()];
    let table = table(cfg, &results, reps, elapsed, &load);
    let json = json(cfg, &stamp, &results, reps, elapsed, &load);
    let mut written = Vec::new();
    if let Some(dir) = &cfg.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let names = if cfg.mode == Mode::CheckOnly {
            vec!["check-only.json".to_string()]
        } else {
            vec![format!("{stamp}.json"), "latest.json".to_string()]
        };
        for name in names {
            let path = dir.join(name);
            std::fs::write(&path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
            written.push(path);
        }
    }
    Ok(Report {
        table,
        written,
        failures,
    })
}

enum Outcome {
    Value(f64),
    Na(String),
    Missing,
    Failed(String),
}

fn run_contender(cfg: &Config, who: Who, figure: &str, params: &[(&str, usize)]) -> Outcome {
    let mut cmd = match who.start_method() {
        None => {
            let mut c = Command::new(&cfg.bench_bin);
            c.arg(who.key());
            c
        }
        Some(method) => {
            let Some((python, _)) = &cfg.python else {
                return Outcome::Missing;
            };
            let mut c = Command::new(python);
            c.arg(&cfg.script).arg(method);
            c
        }
    };
    cmd.arg(figure);
    for (k, v) in params {
        cmd.arg(format!("{k}={v}"));
    }
    // stderr is inherited: a contender's complaint shows where it happened.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown = format!("{cmd:?}");
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot run {shown}: {e}")),
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = cfg.mode.run_limit();
    let out = match rx.recv_timeout(limit) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Outcome::Failed(format!("{shown}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            return Outcome::Failed(format!("{shown}: no result after {limit:?}; killed"));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Outcome::Failed(format!("{shown}: {}", out.status));
    }
    for line in stdout.lines() {
        if let Some(v) = line.strip_prefix("RESULT ") {
            return match v.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Outcome::Value(v),
                _ => Outcome::Failed(format!("{shown}: bad result {v:?}")),
            };
        }
        if let Some(why) = line.strip_prefix("NA ") {
            return Outcome::Na(why.trim().to_string());
        }
    }
    Outcome::Failed(format!("{shown}: no RESULT line in {stdout:?}"))
}

// ------------------------------------------------------------- machine --

/// The interpreter and its version, if it runs and has multiprocessing.
pub fn find_python(cmd: &str) -> Option<(String, String)> {
    let out = Command::new(cmd)
        .args([
            "-c",
            "import multiprocessing, sys; print(sys.version.split()[0])",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some((cmd.to_string(), format!("Python {v}")))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews
/// every figure, so the record says how busy it was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// HEAD's commit and whether tracked files differ from it (read-only).
fn git_commit() -> (Option<String>, Option<bool>) {
    let root = root();
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&root)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    (commit, dirty)
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for `t`.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_stamp(t), "20240229T123456Z");
    }
}
