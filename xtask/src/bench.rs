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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

// ------------------------------------------------------------ contenders --

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Who {
    Floor,
    Mproc,
    Procspawn,
    PySpawn,
    PyForkserver,
    PyFork,
}

const COLUMNS: [Who; 6] = [
    Who::Floor,
    Who::Mproc,
    Who::Procspawn,
    Who::PySpawn,
    Who::PyForkserver,
    Who::PyFork,
];
const PROCESS_FIGURE: &[Who] = &COLUMNS;
const PIPE_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::Procspawn, Who::PyFork];
const QUEUE_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::PyFork];

impl Who {
    fn key(self) -> &'static str {
        match self {
            Who::Floor => "floor",
            Who::Mproc => "mproc",
            Who::Procspawn => "procspawn",
            Who::PySpawn => "cpython_spawn",
            Who::PyForkserver => "cpython_forkserver",
            Who::PyFork => "cpython_fork",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Who::Floor => "floor",
            Who::Mproc => "mproc",
            Who::Procspawn => "procspawn",
            Who::PySpawn => "CPy spawn",
            Who::PyForkserver => "CPy forkserver",
            Who::PyFork => "CPy fork",
        }
    }

    fn start_method(self) -> Option<&'static str> {
        match self {
            Who::PySpawn => Some("spawn"),
            Who::PyForkserver => Some("forkserver"),
            Who::PyFork => Some("fork"),
            _ => None,
        }
    }
}

// --------------------------------------------------------------- figures --

#[derive(Clone, Copy, PartialEq, Eq)]
enum Base {
    Floor,
    CPython,
}

struct Goal {
    against: Base,
    factor: f64,
}

struct Row {
    id: &'static str,
    /// `{n}` stands for the first parameter's value.
    title: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    figure: &'static str,
    params: fn(Mode) -> Vec<(&'static str, usize)>,
    who: &'static [Who],
    /// Applied to each contender's value (items/s → GB/s).
    scale: f64,
    goal: Option<Goal>,
}

const MIB: usize = 1 << 20;

fn rows() -> Vec<Row> {
    vec![
        Row {
            id: "spawn_first_line",
            title: "spawn → first line (median of {n})",
            unit: "ms",
            higher_is_better: false,
            figure: "spawn-first-line",
            params: |m| vec![("samples", m.pick(200, 30, 1))],
            who: PROCESS_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 1.3,
            }),
        },
        Row {
            id: "start_join_100",
            title: "start+join {n} processes",
            unit: "ms",
            higher_is_better: false,
            figure: "start-join",
            params: |m| vec![("procs", m.pick(100, 100, 2))],
            who: PROCESS_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 1.3,
            }),
        },
        Row {
            id: "pipe_rt_64",
            title: "Pipe 64 B round trip ({n} iters)",
            unit: "µs",
            higher_is_better: false,
            figure: "pipe-rt",
            params: |m| vec![("iters", m.pick(20_000, 5_000, 20)), ("size", 64)],
            who: PIPE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 1.15,
            }),
        },
        Row {
            id: "pipe_rt_64_pinned",
            title: "Pipe 64 B round trip, both on one CPU ({n} iters)",
            unit: "µs",
            higher_is_better: false,
            figure: "pipe-rt",
            params: |m| {
                vec![
                    ("iters", m.pick(20_000, 5_000, 20)),
                    ("size", 64),
                    ("pinned", 1),
                ]
            },
            who: PIPE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 1.15,
            }),
        },
        Row {
            id: "pipe_1mib_bytes",
            title: "Pipe 1 MiB, send_bytes ({n} msgs)",
            unit: "GB/s",
            higher_is_better: true,
            figure: "pipe-bulk",
            params: |m| vec![("msgs", m.pick(500, 100, 1)), ("size", MIB), ("typed", 0)],
            who: PIPE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 0.9,
            }),
        },
        Row {
            id: "pipe_1mib_typed",
            title: "Pipe 1 MiB, typed Vec<u8> ({n} msgs)",
            unit: "GB/s",
            higher_is_better: true,
            figure: "pipe-bulk",
            params: |m| vec![("msgs", m.pick(200, 50, 1)), ("size", MIB), ("typed", 1)],
            who: PIPE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 0.9,
            }),
        },
        Row {
            id: "pipe_1mib_bytebuf",
            title: "Pipe 1 MiB, typed serde_bytes::ByteBuf ({n} msgs)",
            unit: "GB/s",
            higher_is_better: true,
            figure: "pipe-bulk",
            params: |m| vec![("msgs", m.pick(500, 100, 1)), ("size", MIB), ("typed", 2)],
            who: PIPE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 0.9,
            }),
        },
        Row {
            id: "queue_64_1p1c",
            title: "Queue 64 B, 1P/1C ({n} items)",
            unit: "items/s",
            higher_is_better: true,
            figure: "queue-items",
            params: |m| {
                vec![
                    ("items", m.pick(200_000, 50_000, 40)),
                    ("size", 64),
                    ("producers", 1),
                    ("consumers", 1),
                ]
            },
            who: QUEUE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::CPython,
                factor: 10.0,
            }),
        },
        Row {
            id: "queue_64_4p4c",
            title: "Queue 64 B, 4P/4C ({n} items)",
            unit: "items/s",
            higher_is_better: true,
            figure: "queue-items",
            params: |m| {
                vec![
                    ("items", m.pick(200_000, 50_000, 40)),
                    ("size", 64),
                    ("producers", 4),
                    ("consumers", 4),
                ]
            },
            who: QUEUE_FIGURE,
            scale: 1.0,
            goal: Some(Goal {
                against: Base::CPython,
                factor: 10.0,
            }),
        },
        Row {
            id: "queue_1mib",
            title: "Queue 1 MiB, 1P/1C ({n} items)",
            unit: "GB/s",
            higher_is_better: true,
            figure: "queue-items",
            params: |m| {
                vec![
                    ("items", m.pick(300, 60, 2)),
                    ("size", MIB),
                    ("producers", 1),
                    ("consumers", 1),
                ]
            },
            who: QUEUE_FIGURE,
            scale: MIB as f64 / 1e9,
            goal: Some(Goal {
                against: Base::Floor,
                factor: 0.5,
            }),
        },
        Row {
            id: "idle_child_rss",
            title: "peak RSS of an idle child (median of {n})",
            unit: "MiB",
            higher_is_better: false,
            figure: "idle-rss",
            params: |m| vec![("samples", m.pick(5, 3, 1))],
            who: PROCESS_FIGURE,
            scale: 1.0,
            goal: None,
        },
    ]
}

impl Row {
    fn title(&self, mode: Mode) -> String {
        let n = (self.params)(mode).first().map(|p| p.1).unwrap_or(0);
        self.title.replace("{n}", &n.to_string())
    }

    /// The CPython contender mproc is compared with: the spawn start method
    /// where there is one (a fresh process, as mproc's), else fork.
    fn cpython(&self) -> Who {
        if self.who.contains(&Who::PySpawn) {
            Who::PySpawn
        } else {
            Who::PyFork
        }
    }
}

// ----------------------------------------------------------------- cells --

/// One contender's result for one figure.
enum Cell {
    Values(Vec<f64>),
    /// The contender says it has no value (`NA <why>`).
    Na(String),
    /// No python3 on this machine.
    Missing,
    Failed(String),
}

impl Cell {
    fn median(&self) -> Option<f64> {
        match self {
            Cell::Values(v) if !v.is_empty() => Some(median(v)),
            _ => None,
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct RowResult<'a> {
    row: &'a Row,
    cells: BTreeMap<Who, Cell>,
}

impl RowResult<'_> {
    fn value(&self, who: Who) -> Option<f64> {
        self.cells.get(&who).and_then(Cell::median)
    }

    fn ratio(&self, to: Who) -> Option<f64> {
        Some(self.value(Who::Mproc)? / self.value(to)?)
    }

    /// The goal's ratio and whether it is met (`None`: nothing to compare).
    fn goal(&self) -> Option<(f64, bool)> {
        let goal = self.row.goal.as_ref()?;
        let base = match goal.against {
            Base::Floor => Who::Floor,
            Base::CPython => self.row.cpython(),
        };
        let r = self.ratio(base)?;
        let met = if self.row.higher_is_better {
            r >= goal.factor
        } else {
            r <= goal.factor
        };
        Some((r, met))
    }

    fn goal_text(&self) -> Option<String> {
        let goal = self.row.goal.as_ref()?;
        let op = if self.row.higher_is_better {
            "≥"
        } else {
            "≤"
        };
        let base = match goal.against {
            Base::Floor => "floor",
            Base::CPython => "CPy",
        };
        Some(format!("{op} {}× {base}", goal.factor))
    }
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
    cargo(&root, &build)?;
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
    let table = table(cfg, &results, reps, elapsed);
    let json = json(cfg, &stamp, &results, reps, elapsed);
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

// ----------------------------------------------------------------- table --

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e5 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell_text(r: &RowResult<'_>, who: Who) -> String {
    match r.cells.get(&who) {
        None => "—".into(),
        Some(Cell::Values(v)) if v.is_empty() => "—".into(),
        Some(c @ Cell::Values(_)) => c.median().map(fmt_num).unwrap_or_default(),
        Some(Cell::Na(why)) if why == "does not apply" => "—".into(),
        Some(Cell::Na(why)) => format!("n/a ({why})"),
        Some(Cell::Missing) => "missing (no python3)".into(),
        Some(Cell::Failed(_)) => "FAILED".into(),
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map(|r| format!("{}×", fmt_num(r)))
        .unwrap_or_else(|| "—".into())
}

fn table(cfg: &Config, results: &[RowResult<'_>], reps: usize, elapsed: f64) -> String {
    let mut header: Vec<String> = vec!["figure".into(), "unit".into()];
    header.extend(COLUMNS.iter().map(|w| w.header().to_string()));
    header.extend(
        ["mproc/floor", "mproc/CPy", "mproc/procspawn", "goal"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut body: Vec<Vec<String>> = Vec::new();
    for r in results {
        let mut line = vec![r.row.title(cfg.mode), r.row.unit.to_string()];
        line.extend(COLUMNS.iter().map(|&w| cell_text(r, w)));
        line.push(ratio_text(r.ratio(Who::Floor)));
        line.push(ratio_text(r.ratio(r.row.cpython())));
        line.push(if r.row.who.contains(&Who::Procspawn) {
            ratio_text(r.ratio(Who::Procspawn))
        } else {
            "—".into()
        });
        line.push(match (r.goal_text(), r.goal()) {
            (None, _) => "—".into(),
            (Some(t), Some((_, true))) => format!("{t} ✓"),
            (Some(t), Some((_, false))) => format!("{t} ✗"),
            (Some(t), None) => format!("{t} ?"),
        });
        body.push(line);
    }
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            body.iter()
                .map(|l| width(&l[c]))
                .chain([width(&header[c])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c] - width(cell);
            // Text left, numbers right.
            if c < 2 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    out.push('|');
    for (c, w) in widths.iter().enumerate() {
        let dashes = "-".repeat((*w).max(3));
        if c < 2 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for l in &body {
        line(&mut out, l);
    }
    let _ = write!(
        out,
        "\nMedians of {reps} repetition(s), contenders interleaved; {} mode, {elapsed:.0} s. \
         Ratios are mproc's value over the other's (times: lower is better; rates: higher). \
         mproc/CPy compares with CPython's spawn start method for the process figures \
         (a fresh process, as mproc's) and with fork (Linux's default) for Pipe and Queue.",
        cfg.mode.name()
    );
    if cfg.python.is_none() {
        out.push_str(" CPython: missing (no python3 on PATH).");
    }
    out
}

// ------------------------------------------------------------------ json --

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

fn json(cfg: &Config, stamp: &str, results: &[RowResult<'_>], reps: usize, elapsed: f64) -> String {
    let (commit, dirty) = git_commit();
    let mut o = String::new();
    o.push_str("{\n");
    let _ = writeln!(o, "  \"schema\": 1,");
    let _ = writeln!(o, "  \"timestamp\": {},", json_str(stamp));
    let _ = writeln!(o, "  \"mode\": {},", json_str(cfg.mode.name()));
    let _ = writeln!(o, "  \"command\": {},", json_str(&cfg.command));
    let _ = writeln!(
        o,
        "  \"commit\": {},",
        commit.as_deref().map(json_str).unwrap_or("null".into())
    );
    let _ = writeln!(
        o,
        "  \"dirty\": {},",
        dirty.map(|d| d.to_string()).unwrap_or("null".into())
    );
    let _ = writeln!(o, "  \"machine\": {{");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(o, "    \"nproc\": {nproc},");
    let _ = writeln!(o, "    \"cpu\": {},", json_str(&cpu_model()));
    let _ = writeln!(o, "    \"kernel\": {},", json_str(&kernel()));
    let _ = writeln!(
        o,
        "    \"python\": {}",
        cfg.python
            .as_ref()
            .map(|(_, v)| json_str(v))
            .unwrap_or("null".into())
    );
    let _ = writeln!(o, "  }},");
    let _ = writeln!(o, "  \"repetitions\": {reps},");
    let _ = writeln!(o, "  \"elapsed_s\": {},", json_num(Some(elapsed)));
    let _ = writeln!(o, "  \"figures\": [");
    for (i, r) in results.iter().enumerate() {
        let row = r.row;
        o.push_str("    {\n");
        let _ = writeln!(o, "      \"id\": {},", json_str(row.id));
        let _ = writeln!(o, "      \"title\": {},", json_str(&row.title(cfg.mode)));
        let _ = writeln!(o, "      \"unit\": {},", json_str(row.unit));
        let _ = writeln!(
            o,
            "      \"better\": {},",
            json_str(if row.higher_is_better {
                "higher"
            } else {
                "lower"
            })
        );
        let params: Vec<String> = (row.params)(cfg.mode)
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_str(k)))
            .collect();
        let _ = writeln!(o, "      \"params\": {{{}}},", params.join(", "));
        let _ = writeln!(o, "      \"contenders\": {{");
        let cells: Vec<String> = row
            .who
            .iter()
            .map(|&w| {
                let body = match r.cells.get(&w) {
                    Some(c @ Cell::Values(v)) => format!(
                        "{{\"median\": {}, \"samples\": [{}]}}",
                        json_num(c.median()),
                        v.iter()
                            .map(|x| json_num(Some(*x)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(Cell::Na(why)) => format!("{{\"na\": {}}}", json_str(why)),
                    Some(Cell::Missing) => "{\"missing\": \"no python3\"}".to_string(),
                    Some(Cell::Failed(why)) => format!("{{\"failed\": {}}}", json_str(why)),
                    None => "null".to_string(),
                };
                format!("        {}: {body}", json_str(w.key()))
            })
            .collect();
        let _ = writeln!(o, "{}", cells.join(",\n"));
        let _ = writeln!(o, "      }},");
        let _ = writeln!(
            o,
            "      \"ratios\": {{\"mproc/floor\": {}, \"mproc/cpython\": {}, \"cpython\": {}, \"mproc/procspawn\": {}}},",
            json_num(r.ratio(Who::Floor)),
            json_num(r.ratio(row.cpython())),
            json_str(row.cpython().key()),
            json_num(if row.who.contains(&Who::Procspawn) {
                r.ratio(Who::Procspawn)
            } else {
                None
            })
        );
        let goal = match (r.goal_text(), r.goal()) {
            (Some(t), Some((ratio, met))) => format!(
                "{{\"text\": {}, \"ratio\": {}, \"met\": {met}}}",
                json_str(&t),
                json_num(Some(ratio))
            ),
            (Some(t), None) => format!(
                "{{\"text\": {}, \"ratio\": null, \"met\": null}}",
                json_str(&t)
            ),
            (None, _) => "null".to_string(),
        };
        let _ = writeln!(o, "      \"goal\": {goal}");
        o.push_str(if i + 1 < results.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    o.push_str("  ]\n}\n");
    o
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

/// The workspace root (this file is in xtask/src/).
fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dir = here.to_path_buf();
    while !dir.join("bench").join("python").is_dir() {
        if !dir.pop() {
            return here.to_path_buf();
        }
    }
    dir
}

fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed: {status}", args.join(" ")))
    }
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

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn numbers_keep_three_figures() {
        assert_eq!(fmt_num(0.6912), "0.691");
        assert_eq!(fmt_num(47.04), "47.0");
        assert_eq!(fmt_num(3430.0), "3430");
        assert_eq!(fmt_num(25_639.0), "25.6k");
        assert_eq!(fmt_num(159_000.0), "159k");
        assert_eq!(fmt_num(1_234_567.0), "1.23M");
    }
}
