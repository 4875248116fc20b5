//! The first step of a spawn, in the parent: check that the target is
//! registered, take its entry fn of the wanted kind, and encode its
//! arguments, collecting the OS handles they carry: a [`Prepared`]
//! launch.

use mproc_ipc::__private::handles;
use mproc_ipc::__private::sys::RawHandle;
use mproc_ipc::{Error, Result};

use super::entry::EntryFn;
use crate::registry::{registered_entry, registered_name, target_names, Args, Target};

/// The arguments of a launch, ready to go.
pub(crate) struct Prepared {
    pub(crate) entry: EntryFn,
    pub(crate) target: String,
    pub(crate) args: Vec<u8>,
    pub(crate) handles: Vec<RawHandle>,
}

/// Checks the target is registered, takes its registered entry fn of the
/// given kind, and encodes its arguments, collecting the OS handles they
/// carry.
pub(crate) fn prepare<F, A>(args: &A, kind: &str) -> Result<Prepared>
where
    F: Target<A>,
    A: Args,
{
    let target = check_registered::<F>()?;
    let Some(entry) = registered_entry::<F>(kind) else {
        let (name, short) = target_names::<F>();
        return Err(Error::UnregisteredTarget { name, short });
    };
    let (encoded, handles) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(args));
    let args = encoded?;
    Ok(Prepared {
        entry,
        target,
        args,
        handles,
    })
}

/// The full path of `F` if it is a fn registered with `#[mproc::target]`,
/// else [`Error::UnregisteredTarget`] naming it.
pub(crate) fn check_registered<F: Copy + 'static>() -> Result<String> {
    let (target, short) = target_names::<F>();
    if target.contains("{{closure}}") {
        return Err(Error::ClosureTarget { name: target });
    }
    if std::mem::size_of::<F>() != 0 || registered_name::<F>() != Some(short.as_str()) {
        return Err(Error::UnregisteredTarget {
            name: target,
            short,
        });
    }
    Ok(target)
}
