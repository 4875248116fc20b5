//! What parent and child say to each other: the entry token's parts,
//! the [`LaunchRecord`], a remote child's [`Hello`], the child's [`Ack`]
//! and its [`Report`], and the exit code of a child that cannot start.
//! Both sides depend on this file; it depends on neither.

use serde::{Deserialize, Serialize};

/// The environment variable that carries the entry token.
pub(crate) const TOKEN_ENV: &str = "MPROC_ENTRY_TOKEN";
/// Version of the launch protocol over a named control channel (first
/// field of the token `mproc1:<secret>:<address>`): remote launchers,
/// Windows.
pub(crate) const PROTOCOL: &str = "mproc1";
/// The launch protocol over an inherited channel (the token
/// `mproc2:<descriptor>`): no name, no secret, no handshake.
pub(crate) const INHERITED: &str = "mproc2";
/// A child that cannot start exits with this code (and one line on stderr).
pub const BOOTSTRAP_EXIT_CODE: i32 = 121;

/// What the child needs to become the process the parent described.
#[derive(Serialize, Deserialize)]
pub(crate) struct LaunchRecord {
    /// Offset of a static from the anchor: tells the child it is the same build.
    pub(crate) build_mark: i64,
    /// Offset of the monomorphised entry fn from the anchor.
    pub(crate) entry: i64,
    pub(crate) target: String,
    pub(crate) args: Vec<u8>,
    /// Number of handles that follow the record (the parent sentinel first).
    pub(crate) handles: u32,
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) authkey: Vec<u8>,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    /// Keep the control channel open and report the target's result.
    pub(crate) report: bool,
    /// Started by a remote launcher: no handles travel (the parent
    /// sentinel neither); the control channel is TCP.
    pub(crate) remote: bool,
    /// The control channel itself becomes the arguments' one connection
    /// (a remote pool worker's).
    pub(crate) control_conn: bool,
    /// Logging and the child initializer (`crate::logging`).
    pub(crate) setup: crate::logging::ChildSetup,
}

/// What a child placed by a remote launcher tells about itself once it
/// has its launch record: the parent cannot see a remote process.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub(crate) struct Hello {
    pub(crate) pid: u32,
    /// `SLURMD_NODENAME`, else the host name.
    pub(crate) node: String,
    /// `SLURM_JOB_ID`, if any.
    pub(crate) job: String,
    /// `SLURM_PROCID`: which task of its step (0 for a step of one).
    pub(crate) task: u32,
}

/// The child's acknowledgement: its arguments decoded (or why not).
pub(crate) type Ack = std::result::Result<(), String>;

/// What a child reports when its target ends (for `spawn`).
#[derive(Serialize, Deserialize)]
pub(crate) enum Report {
    /// The target's return value, postcard-encoded.
    Value(Vec<u8>),
    /// The target panicked.
    Panic { message: String, location: String },
    /// The target's result could not be encoded or reported.
    Failed(String),
}
