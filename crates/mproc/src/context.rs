//! Who this process is: `MainProcess`, or a child with its name, identity,
//! authkey and parent link (CPython's `current_process()`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::sys;

/// The current process's identity.
pub(crate) struct Current {
    pub(crate) name: String,
    /// `[]` in the main process; `[3]` in `Process-3`; `[3, 1]` in its first child.
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) authkey: Arc<[u8]>,
    pub(crate) parent: Option<Arc<ParentLink>>,
    /// Why this process has no authkey (the OS random source failed):
    /// `start()` then refuses, rather than hand out a key that is not secret.
    pub(crate) key_error: Option<String>,
    /// Counts `Process` constructions in this process (CPython's `_counter`).
    counter: AtomicU32,
}

/// A child's link to its parent.
pub(crate) struct ParentLink {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) sentinel: sys::ParentSentinel,
}

static CURRENT: OnceLock<Current> = OnceLock::new();
/// A child forked by the forkserver inherits the server's `CURRENT`; its
/// own identity goes here and wins.
static FORKED: OnceLock<Current> = OnceLock::new();
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// This process's identity (the main process's, unless a launch set it).
pub(crate) fn current() -> &'static Current {
    if let Some(forked) = FORKED.get() {
        return forked;
    }
    CURRENT.get_or_init(|| {
        let mut key = [0u8; 32];
        // A failing OS random source leaves no usable key: every `start()`
        // reports it (`key_error`) instead of using zeros.
        let key_error = crate::fault::random_bytes(&mut key)
            .err()
            .map(|e| format!("no authkey for this process: {e}"));
        Current {
            name: "MainProcess".to_string(),
            identity: Vec::new(),
            daemon: false,
            authkey: Arc::from(&key[..]),
            parent: None,
            key_error,
            counter: AtomicU32::new(1),
        }
    })
}

/// Installs a child's identity (from its launch record). Called once, in
/// the child's bootstrap, before any user code.
pub(crate) fn set_child(
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    authkey: Vec<u8>,
    parent: ParentLink,
) {
    let me = Current {
        name,
        identity,
        daemon,
        authkey: Arc::from(authkey),
        parent: Some(Arc::new(parent)),
        key_error: None,
        counter: AtomicU32::new(1),
    };
    if let Err(me) = CURRENT.set(me) {
        // Forked by the forkserver, whose identity `CURRENT` holds.
        let _ = FORKED.set(me);
    }
}

impl Current {
    /// The next child's identity and default name (`Process-N[:M]`).
    pub(crate) fn next_child(&self) -> (Vec<u32>, String) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut identity = self.identity.clone();
        identity.push(n);
        let name = format!(
            "Process-{}",
            identity
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(":")
        );
        (identity, name)
    }
}

/// Records that `init()` (or `#[mproc::main]`) ran in this process.
pub(crate) fn mark_initialised() -> bool {
    !INITIALISED.swap(true, Ordering::SeqCst)
}
