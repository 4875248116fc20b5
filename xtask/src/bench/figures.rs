//! The figures: who runs in each, with which parameters, and the goal.

use std::collections::BTreeMap;

use super::Mode;

// ------------------------------------------------------------ contenders --

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Who {
    Floor,
    Mproc,
    Procspawn,
    PySpawn,
    PyForkserver,
    PyFork,
}

pub(super) const COLUMNS: [Who; 6] = [
    Who::Floor,
    Who::Mproc,
    Who::Procspawn,
    Who::PySpawn,
    Who::PyForkserver,
    Who::PyFork,
];
pub(super) const PROCESS_FIGURE: &[Who] = &COLUMNS;
/// The forkserver rows: the re-exec floor, mproc's forkserver, CPython's.
pub(super) const FORKSERVER_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::PyForkserver];
pub(super) const PIPE_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::Procspawn, Who::PyFork];
pub(super) const QUEUE_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::PyFork];
pub(super) const SYNC_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::PyFork];
/// Pool figures: the floor column is the row's reference (rayon's
/// `par_iter` for CPU-bound tasks, 4 bare `mproc::spawn`s for the start).
pub(super) const POOL_FIGURE: &[Who] = &[Who::Floor, Who::Mproc, Who::Procspawn, Who::PyFork];

impl Who {
    pub(super) fn key(self) -> &'static str {
        match self {
            Who::Floor => "floor",
            Who::Mproc => "mproc",
            Who::Procspawn => "procspawn",
            Who::PySpawn => "cpython_spawn",
            Who::PyForkserver => "cpython_forkserver",
            Who::PyFork => "cpython_fork",
        }
    }

    pub(super) fn header(self) -> &'static str {
        match self {
            Who::Floor => "floor",
            Who::Mproc => "mproc",
            Who::Procspawn => "procspawn",
            Who::PySpawn => "CPy spawn",
            Who::PyForkserver => "CPy forkserver",
            Who::PyFork => "CPy fork",
        }
    }

    pub(super) fn start_method(self) -> Option<&'static str> {
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
pub(super) enum Base {
    Floor,
    CPython,
}

pub(super) struct Goal {
    pub(super) against: Base,
    pub(super) factor: f64,
}

pub(super) struct Row {
    pub(super) id: &'static str,
    /// `{n}` stands for the first parameter's value.
    pub(super) title: &'static str,
    pub(super) unit: &'static str,
    pub(super) higher_is_better: bool,
    pub(super) figure: &'static str,
    pub(super) params: fn(Mode) -> Vec<(&'static str, usize)>,
    pub(super) who: &'static [Who],
    /// Applied to each contender's value (items/s → GB/s).
    pub(super) scale: f64,
    pub(super) goal: Option<Goal>,
}

pub(super) const MIB: usize = 1 << 20;

fn goal(against: Base, factor: f64) -> Option<Goal> {
    Some(Goal { against, factor })
}

/// A Pipe figure: the floor, mproc, procspawn and CPython (fork).
fn pipe(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    figure: &'static str,
    params: fn(Mode) -> Vec<(&'static str, usize)>,
    goal: Option<Goal>,
) -> Row {
    Row {
        id,
        title,
        unit,
        higher_is_better: unit == "GB/s",
        figure,
        params,
        who: PIPE_FIGURE,
        scale: 1.0,
        goal,
    }
}

/// A Queue figure (`queue-items`): the floor, mproc and CPython (fork).
fn queue(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    scale: f64,
    params: fn(Mode) -> Vec<(&'static str, usize)>,
    goal: Option<Goal>,
) -> Row {
    Row {
        id,
        title,
        unit,
        higher_is_better: true,
        figure: "queue-items",
        params,
        who: QUEUE_FIGURE,
        scale,
        goal,
    }
}

/// A `pool` figure (bench/src/pool_side.rs): `op` picks what is measured.
fn pool(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    params: fn(Mode) -> Vec<(&'static str, usize)>,
    goal: Option<Goal>,
) -> Row {
    Row {
        id,
        title,
        unit,
        higher_is_better: unit == "tasks/s",
        figure: "pool",
        params,
        who: POOL_FIGURE,
        scale: 1.0,
        goal,
    }
}

/// A cluster Pool's start (issue 18, `pool_side.rs` op 6): 4 workers
/// over the 3 nodes of `cargo xtask slurm start`'s cluster, against
/// (`reference`) 0: one bare `srun` step of 4 tasks, 1: the local Pool.
fn cluster_pool_start(id: &'static str, title: &'static str, reference: usize) -> Row {
    Row {
        id,
        title,
        unit: "ms",
        higher_is_better: false,
        figure: "pool",
        params: match reference {
            0 => |_| vec![("workers", 4), ("op", 6), ("nodes", 3), ("ref", 0)],
            _ => |_| vec![("workers", 4), ("op", 6), ("nodes", 3), ("ref", 1)],
        },
        who: &[Who::Floor, Who::Mproc],
        scale: 1.0,
        goal: None,
    }
}

/// A synchronisation figure (issue 16, `bench/src/sync_side.rs`): the
/// floor, mproc and CPython (fork); rates are higher-is-better.
fn sync(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    figure: &'static str,
    params: fn(Mode) -> Vec<(&'static str, usize)>,
    goal: Option<Goal>,
) -> Row {
    Row {
        id,
        title,
        unit,
        higher_is_better: unit.ends_with("/s"),
        figure,
        params,
        who: SYNC_FIGURE,
        scale: 1.0,
        goal,
    }
}

/// `queue-items` parameters: `ways` producers and as many consumers;
/// `maxsize` 0 is unbounded (and not passed).
fn queue_params(
    items: usize,
    size: usize,
    ways: usize,
    maxsize: usize,
) -> Vec<(&'static str, usize)> {
    let mut p = vec![
        ("items", items),
        ("size", size),
        ("producers", ways),
        ("consumers", ways),
    ];
    if maxsize > 0 {
        p.push(("maxsize", maxsize));
    }
    p
}

pub(super) fn rows() -> Vec<Row> {
    vec![
        Row {
            id: "spawn_first_line",
            title: "spawn → first line (median of {n})",
            unit: "ms",
            higher_is_better: false,
            figure: "spawn-first-line",
            params: |m| vec![("samples", m.pick(200, 20, 1))],
            who: PROCESS_FIGURE,
            scale: 1.0,
            goal: goal(Base::Floor, 1.0),
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
            goal: goal(Base::Floor, 1.0),
        },
        Row {
            id: "spawn_first_line_forkserver",
            title: "forkserver spawn → first line (median of {n})",
            unit: "ms",
            higher_is_better: false,
            figure: "spawn-first-line",
            params: |m| vec![("samples", m.pick(200, 20, 1)), ("forkserver", 1)],
            who: FORKSERVER_FIGURE,
            scale: 1.0,
            goal: goal(Base::Floor, 0.25),
        },
        Row {
            id: "start_join_100_forkserver",
            title: "forkserver start+join {n} processes",
            unit: "ms",
            higher_is_better: false,
            figure: "start-join",
            params: |m| vec![("procs", m.pick(100, 100, 2)), ("forkserver", 1)],
            who: FORKSERVER_FIGURE,
            scale: 1.0,
            goal: goal(Base::Floor, 0.3),
        },
        pipe(
            "pipe_rt_64",
            "Pipe 64 B round trip ({n} iters)",
            "µs",
            "pipe-rt",
            |m| vec![("iters", m.pick(20_000, 5_000, 20)), ("size", 64)],
            goal(Base::Floor, 1.15),
        ),
        pipe(
            "pipe_rt_64_pinned",
            "Pipe 64 B round trip, both on one CPU ({n} iters)",
            "µs",
            "pipe-rt",
            |m| {
                vec![
                    ("iters", m.pick(20_000, 5_000, 20)),
                    ("size", 64),
                    ("pinned", 1),
                ]
            },
            goal(Base::Floor, 1.15),
        ),
        pipe(
            "pipe_1mib_bytes",
            "Pipe 1 MiB, send_bytes ({n} msgs)",
            "GB/s",
            "pipe-bulk",
            |m| vec![("msgs", m.pick(500, 100, 1)), ("size", MIB), ("typed", 0)],
            goal(Base::Floor, 0.9),
        ),
        pipe(
            "pipe_1mib_typed",
            "Pipe 1 MiB, typed Vec<u8> ({n} msgs)",
            "GB/s",
            "pipe-bulk",
            |m| vec![("msgs", m.pick(500, 100, 1)), ("size", MIB), ("typed", 1)],
            goal(Base::Floor, 0.5),
        ),
        pipe(
            "pipe_1mib_bytebuf",
            "Pipe 1 MiB, typed serde_bytes::ByteBuf ({n} msgs)",
            "GB/s",
            "pipe-bulk",
            |m| vec![("msgs", m.pick(500, 100, 1)), ("size", MIB), ("typed", 2)],
            goal(Base::Floor, 0.5),
        ),
        queue(
            "queue_64_1p1c",
            "Queue 64 B, 1P/1C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(200_000, 50_000, 40), 64, 1, 0),
            goal(Base::CPython, 20.0),
        ),
        queue(
            "queue_64_4p4c",
            "Queue 64 B, 4P/4C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(200_000, 50_000, 40), 64, 4, 0),
            goal(Base::CPython, 20.0),
        ),
        queue(
            "queue_64_bounded",
            "Queue(1000) 64 B, 1P/1C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(200_000, 50_000, 40), 64, 1, 1000),
            goal(Base::CPython, 10.0),
        ),
        // Small bounded queues, 2P/2C (issue 12 item 11): CPython's
        // semaphore is cheap there; mproc's permits must keep up.
        queue(
            "queue_max1_2p2c",
            "Queue(1) 64 B, 2P/2C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(40_000, 10_000, 40), 64, 2, 1),
            goal(Base::CPython, 3.0),
        ),
        queue(
            "queue_max3_2p2c",
            "Queue(3) 64 B, 2P/2C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(40_000, 10_000, 40), 64, 2, 3),
            goal(Base::CPython, 3.0),
        ),
        queue(
            "queue_max16_2p2c",
            "Queue(16) 64 B, 2P/2C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(40_000, 10_000, 40), 64, 2, 16),
            goal(Base::CPython, 3.0),
        ),
        // Every maxsize from 1 up (issue 12 item 11): 64, the largest
        // queue with a shared-memory lane (128) and the smallest without
        // (129: through the broker).
        queue(
            "queue_max64_2p2c",
            "Queue(64) 64 B, 2P/2C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(100_000, 20_000, 40), 64, 2, 64),
            goal(Base::CPython, 3.0),
        ),
        queue(
            "queue_max128_2p2c",
            "Queue(128) 64 B, 2P/2C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(100_000, 20_000, 40), 64, 2, 128),
            goal(Base::CPython, 3.0),
        ),
        queue(
            "queue_max129_2p2c",
            "Queue(129) 64 B, 2P/2C ({n} items)",
            "items/s",
            1.0,
            |m| queue_params(m.pick(100_000, 20_000, 40), 64, 2, 129),
            goal(Base::CPython, 3.0),
        ),
        queue(
            "queue_1mib",
            "Queue 1 MiB, 1P/1C ({n} items; floor: socketpair)",
            "GB/s",
            MIB as f64 / 1e9,
            |m| queue_params(m.pick(300, 60, 2), MIB, 1, 0),
            goal(Base::Floor, 0.5),
        ),
        pool(
            "pool_map",
            "Pool(2).map, {n} tiny tasks",
            "tasks/s",
            |m| {
                vec![
                    ("n", m.pick(1_000_000, 1_000_000, 1000)),
                    ("op", 0),
                    ("workers", 2),
                ]
            },
            goal(Base::CPython, 5.0),
        ),
        pool(
            "pool_imap",
            "Pool(2).imap chunksize 1, {n} tiny tasks",
            "tasks/s",
            |m| {
                vec![
                    ("n", m.pick(20_000, 20_000, 100)),
                    ("op", 1),
                    ("workers", 2),
                ]
            },
            goal(Base::CPython, 5.0),
        ),
        pool(
            "pool_apply_async",
            "Pool(2).apply_async × {n}",
            "tasks/s",
            |m| {
                vec![
                    ("n", m.pick(20_000, 20_000, 100)),
                    ("op", 2),
                    ("workers", 2),
                ]
            },
            goal(Base::CPython, 10.0),
        ),
        pool(
            "pool_apply_rt",
            "Pool(2).apply round trip ({n} calls)",
            "µs",
            |m| vec![("n", m.pick(2000, 1000, 10)), ("op", 3), ("workers", 2)],
            goal(Base::CPython, 0.1),
        ),
        pool(
            "pool_cpu",
            "Pool(cpu_count).map, {n} tasks of 1 ms CPU (floor: rayon)",
            "tasks/s",
            |m| {
                vec![
                    ("n", m.pick(2000, 2000, 10)),
                    ("op", 4),
                    ("workers", 0),
                    ("us", 1000),
                ]
            },
            goal(Base::Floor, 0.9),
        ),
        pool(
            "pool_start",
            "Pool({n}) start → first result (floor: {n} spawns)",
            "ms",
            |_| vec![("workers", 4), ("op", 5)],
            goal(Base::Floor, 1.2),
        ),
        // Issue 18: NA without a cluster (SLURM_CONF); no numeric goal.
        cluster_pool_start(
            "cluster_pool_start_srun",
            "Slurm Pool({n}) start → first result (floor: srun -N3 -n{n} true)",
            0,
        ),
        cluster_pool_start(
            "cluster_pool_start_local",
            "Slurm Pool({n}) start → first result (floor: local Pool({n}))",
            1,
        ),
        sync(
            "lock_uncontended",
            "Lock acquire+release, uncontended ({n} iters)",
            "ns",
            "lock-uncontended",
            |m| vec![("iters", m.pick(10_000_000, 1_000_000, 100))],
            goal(Base::Floor, 2.0),
        ),
        sync(
            "value_incr_2p",
            "*v.lock()? += 1, 2 processes × {n}",
            "incr/s",
            "value-incr",
            |m| vec![("iters", m.pick(1_000_000, 100_000, 100))],
            goal(Base::CPython, 10.0),
        ),
        sync(
            "event_rt_pinned",
            "Event set → wake round trip, one CPU ({n} iters)",
            "µs",
            "event-rt",
            |m| vec![("iters", m.pick(20_000, 5_000, 20))],
            goal(Base::Floor, 1.2),
        ),
        sync(
            "barrier2_rt",
            "Barrier(2) round, 2 processes ({n} iters)",
            "µs",
            "barrier-rt",
            |m| vec![("iters", m.pick(20_000, 5_000, 20))],
            goal(Base::Floor, 1.5),
        ),
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
    pub(super) fn title(&self, mode: Mode) -> String {
        let n = (self.params)(mode).first().map(|p| p.1).unwrap_or(0);
        self.title.replace("{n}", &n.to_string())
    }

    /// The CPython contender mproc is compared with: the spawn start method
    /// where there is one (a fresh process, as mproc's), else fork.
    pub(super) fn cpython(&self) -> Who {
        if self.who.contains(&Who::PySpawn) {
            Who::PySpawn
        } else {
            Who::PyFork
        }
    }
}

// ----------------------------------------------------------------- cells --

/// One contender's result for one figure.
pub(super) enum Cell {
    Values(Vec<f64>),
    /// The contender says it has no value (`NA <why>`).
    Na(String),
    /// No python3 on this machine.
    Missing,
    Failed(String),
}

impl Cell {
    pub(super) fn median(&self) -> Option<f64> {
        match self {
            Cell::Values(v) if !v.is_empty() => Some(median(v)),
            _ => None,
        }
    }
}

pub(super) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(super) struct RowResult<'a> {
    pub(super) row: &'a Row,
    pub(super) cells: BTreeMap<Who, Cell>,
}

impl RowResult<'_> {
    pub(super) fn value(&self, who: Who) -> Option<f64> {
        self.cells.get(&who).and_then(Cell::median)
    }

    pub(super) fn ratio(&self, to: Who) -> Option<f64> {
        Some(self.value(Who::Mproc)? / self.value(to)?)
    }

    /// The goal's ratio and whether it is met (`None`: nothing to compare).
    pub(super) fn goal(&self) -> Option<(f64, bool)> {
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

    pub(super) fn goal_text(&self) -> Option<String> {
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
