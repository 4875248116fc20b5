//! Windows: plain directories (local names are pipes, whose access is
//! set when they are created).

use std::io;
use std::path::Path;

/// Creates a directory (Windows local names are pipes, which carry their
/// own current-user-only security descriptor: nothing to restrict here).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// Removes a directory made with [`create_private_dir`] (which must be
/// empty).
pub fn remove_private_dir(path: &Path) -> io::Result<()> {
    std::fs::remove_dir(path)
}

/// Removes another process's directory made with [`create_private_dir`]
/// (only an empty one can go).
pub fn remove_dead_private_dir(path: &Path) -> io::Result<()> {
    std::fs::remove_dir(path)
}

/// Nothing to do: a pipe's access is set when it is created.
pub fn make_private(_path: &Path) -> io::Result<()> {
    Ok(())
}
