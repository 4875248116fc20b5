//! Unix: private directories (0700) with a life lock (`flock`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The file in a private directory whose `flock` its creator holds for
/// its whole life: the proof of life [`owner_is_gone`] tests.
const LIFE_LOCK: &str = "lock";

/// Life locks of the directories this process made: open (and locked)
/// until it ends, whatever way it ends.
static LIFE_LOCKS: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Creates a directory only this user may enter (mode 0700), holding a
/// lock in it for the rest of this process's life (see [`owner_is_gone`]).
/// Errors name the path.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let named = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| named("create the private directory", path, e))?;
    // Locked under a temporary name, then renamed: a sweeper never finds
    // the life lock unlocked while its owner lives.
    let pending = path.join(".lock-pending");
    let fd = rustix::fs::open(
        &pending,
        rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::EXCL
            | rustix::fs::OFlags::RDWR
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| named("create the life lock", &pending, e.into()))?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| named("lock", &pending, e.into()))?;
    let lock = path.join(LIFE_LOCK);
    std::fs::rename(&pending, &lock).map_err(|e| named("rename the life lock to", &lock, e))?;
    crate::util::lock::lock(&LIFE_LOCKS).push(fd);
    Ok(())
}

/// Removes a private directory this process made with
/// [`create_private_dir`] (its life lock, then the directory, which must
/// be otherwise empty).
pub fn remove_private_dir(path: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(path.join(LIFE_LOCK));
    std::fs::remove_dir(path)
}

/// Removes a private directory of another process, if that process is
/// gone ([`owner_is_gone`]) and the directory is otherwise empty.
pub fn remove_dead_private_dir(path: &Path) -> io::Result<()> {
    if !owner_is_gone(path) {
        return Err(io::Error::other(format!(
            "{}: its owner may be alive",
            path.display()
        )));
    }
    remove_private_dir(path)
}

/// Whether the process that made the private directory `dir` (with
/// [`create_private_dir`]) has ended, proved by its life lock being free:
/// true for no other reason. Pids prove nothing here (a process in
/// another PID namespace sharing the temp directory has a pid that means
/// nothing in this one). A symlink, a directory of another user, or one
/// without a life lock (being made, or made by an older mproc) is never
/// reported gone.
pub fn owner_is_gone(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.file_type().is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        return false;
    }
    let Ok(fd) = rustix::fs::open(
        dir.join(LIFE_LOCK),
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    // Our lock, if we get it, goes with `fd` when this returns.
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Makes a socket file readable and writable by this user only (0600).
pub fn make_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
