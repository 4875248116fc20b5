//! Where a child process starts: [`Launcher`]. The local launcher
//! re-executes this binary here; a remote one (Slurm's `srun`) has the
//! cluster's scheduler start the same executable, at the same path, on the
//! node it picks, and the child connects back over TCP.
//!
//! This is the launch path's one seam for placement: `launch::begin` asks
//! the launcher for a process holding an inherited channel
//! ([`Launcher::spawn_inheriting`], a local re-exec) or else for a control
//! listener and a started process ([`Launcher::listen`],
//! [`Launcher::spawn`]); the rest of a launch (the mutual HMAC where
//! there is a listener, the launch record, the acknowledgement) is the
//! same for every launcher. A Kubernetes or Ray launcher would be another
//! [`Kind`] here.

use mproc_ipc::{Error, Result};

use crate::sys::{ChildProcess, ControlListener, ControlStream};

/// The environment variable that names the address remote children
/// connect back to (default: this host's name).
pub(crate) const ADVERTISE_ENV: &str = "MPROC_ADVERTISE_ADDR";

/// The host name (or address) children on other hosts reach this
/// process at: `MPROC_ADVERTISE_ADDR`, else this host's name.
pub(crate) fn advertised_host() -> String {
    std::env::var(ADVERTISE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(crate::sys::host_name)
}

/// Where a child process starts: here ([`Launcher::local`], the default)
/// or where a cluster scheduler places it ([`Launcher::srun`]).
///
/// ```
/// use mproc::Launcher;
///
/// let slurm = Launcher::srun().args(["--partition=debug"]).nodes(2);
/// assert!(slurm.is_remote());
/// assert!(!Launcher::local().is_remote());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Launcher {
    kind: Kind,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Local,
    Srun {
        args: Vec<String>,
        nodes: Option<usize>,
    },
}

impl Launcher {
    /// Re-executes this binary on this machine (the default).
    pub fn local() -> Launcher {
        Launcher { kind: Kind::Local }
    }

    /// Slurm: `srun` starts this executable (at the same path: a shared
    /// file system, as MPI assumes) on the node Slurm picks. Inside an
    /// allocation (`SLURM_JOB_ID` set, as in an `sbatch` script) it runs
    /// as a job step of it; outside one, `srun` allocates. The child
    /// connects back over TCP to this host's name, or to
    /// `MPROC_ADVERTISE_ADDR` when set. Linux/Unix only.
    pub fn srun() -> Launcher {
        Launcher {
            kind: Kind::Srun {
                args: Vec::new(),
                nodes: None,
            },
        }
    }

    /// Options passed to `srun` as they are (`--partition=cpu`,
    /// `--time=10`, ...); ignored by the local launcher. `--export` is
    /// mproc's (`--export=ALL`: the tasks need the entry token from this
    /// environment): `start()` refuses it.
    pub fn args<I, S>(mut self, args: I) -> Launcher
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Kind::Srun { args: a, .. } = &mut self.kind {
            a.extend(args.into_iter().map(Into::into));
        }
        self
    }

    /// The number of nodes to spread over (`srun --nodes=n`); ignored by
    /// the local launcher.
    pub fn nodes(mut self, n: usize) -> Launcher {
        if let Kind::Srun { nodes, .. } = &mut self.kind {
            *nodes = Some(n);
        }
        self
    }

    /// Whether children this launcher starts may run on another host.
    pub fn is_remote(&self) -> bool {
        !matches!(self.kind, Kind::Local)
    }

    /// The control listener for one child of this launcher (or one step).
    /// The first step of a launch: refuses options that cannot work.
    pub(crate) fn listen(&self) -> Result<ControlListener> {
        if let Kind::Srun { args, .. } = &self.kind {
            if let Some(bad) = args.iter().find(|a| a.starts_with("--export")) {
                return Err(Error::bootstrap(format!(
                    "Launcher::srun(): {bad:?} is not allowed: the tasks need the \
                     launch's entry token from this environment (mproc passes --export=ALL)"
                )));
            }
        }
        match &self.kind {
            Kind::Local => Ok(ControlListener::bind()?),
            Kind::Srun { .. } => ControlListener::bind_tcp(&advertised_host())
                .map_err(|e| Error::bootstrap_with("cannot listen for a remote child on TCP", e)),
        }
    }

    /// Starts a local child holding an inherited control channel (by
    /// re-exec, or forked by the forkserver), with the entry token
    /// `token(value)` (the value its end is found at): the child and this
    /// process's end. `None` where this launch needs a named listener
    /// instead (a remote launcher, an OS without inherited channels).
    /// A `daemon` child is tied to this process from its start where the
    /// OS layer can ([`ChildProcess::spawn_inheriting`]).
    pub(crate) fn spawn_inheriting(
        &self,
        token_env: &str,
        token: &dyn Fn(u64) -> String,
        daemon: bool,
    ) -> Result<Option<(ChildProcess, ControlStream)>> {
        match &self.kind {
            Kind::Local => Ok(crate::start_method::create_child_inheriting(
                token_env, token, daemon,
            )?),
            Kind::Srun { .. } => Ok(None),
        }
    }

    /// Starts the child process with the entry token in its environment.
    /// For `srun`, the process started here is `srun` itself: its exit
    /// code is the task's, SIGTERM to it cancels the step, and a killed
    /// `srun` still ends its task (Slurm's rule).
    /// `ntasks` children at once (one job step of `ntasks` tasks) with
    /// `srun`; the local launcher starts one.
    pub(crate) fn spawn(
        &self,
        ntasks: usize,
        token_env: &str,
        token: &str,
    ) -> Result<ChildProcess> {
        match &self.kind {
            // Here, by re-exec (the forkserver's children always inherit
            // their channel: `spawn_inheriting`).
            Kind::Local => Ok(crate::start_method::create_child(token_env, token)?),
            Kind::Srun { args, nodes } => {
                let mut all = vec![
                    format!("--ntasks={ntasks}"),
                    "--quiet".to_string(),
                    // The parent's environment, the token included, goes
                    // to the task (srun's default, made explicit).
                    "--export=ALL".to_string(),
                ];
                if let Some(n) = nodes {
                    // Never more nodes than tasks (srun would warn).
                    all.push(format!("--nodes={}", (*n).clamp(1, ntasks.max(1))));
                }
                all.extend(args.iter().cloned());
                tracing::debug!(args = ?all, "starting a child with srun");
                ChildProcess::spawn_via("srun", &all, token_env, token).map_err(|e| {
                    Error::bootstrap_with(
                        "cannot start srun (is Slurm installed and SLURM_CONF set?)",
                        e,
                    )
                })
            }
        }
    }
}
