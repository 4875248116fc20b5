//! Handles in a launch's arguments.
//!
//! A [`Connection`](crate) or a queue handle inside a target's `args` is
//! serialised as an index into the launch's handle table; the OS handle
//! itself travels out of band (SCM_RIGHTS on Unix, `DuplicateHandle` on
//! Windows). While the parent encodes the arguments a thread-local
//! collector records each handle; while the child decodes them, the
//! received handles are offered back by index (the pattern of ipc-channel).

use std::cell::RefCell;

use crate::sys::{OwnedHandle, RawHandle};

thread_local! {
    /// The host name remote peers reach this process at, while a launch
    /// for another host is being encoded.
    static REMOTE_HOST: RefCell<Option<String>> = const { RefCell::new(None) };
    static OUTGOING: RefCell<Option<Vec<RawHandle>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedHandle>>>> = const { RefCell::new(None) };
}

/// Runs `f` (which serialises a launch's arguments) and returns its result
/// with the raw handles it registered, in index order. The handles are
/// borrowed: the values being encoded must stay alive until they are sent.
pub fn collect_outgoing<R>(f: impl FnOnce() -> R) -> (R, Vec<RawHandle>) {
    let previous = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let r = f();
    let handles = OUTGOING.with(|o| std::mem::replace(&mut *o.borrow_mut(), previous));
    (r, handles.unwrap_or_default())
}

/// Runs `f` (which serialises a launch's arguments) for a child on
/// another host, which reaches this one at `host`: a queue handle then
/// carries its broker's TCP address (the broker starts serving TCP).
pub fn encode_for_remote<R>(host: &str, f: impl FnOnce() -> R) -> R {
    let previous = REMOTE_HOST.with(|h| h.borrow_mut().replace(host.to_string()));
    let r = f();
    REMOTE_HOST.with(|h| *h.borrow_mut() = previous);
    r
}

/// The host name of [`encode_for_remote`], while it runs.
pub fn remote_host() -> Option<String> {
    REMOTE_HOST.with(|h| h.borrow().clone())
}

/// Registers a handle for transfer and returns its index in the table, or
/// `None` when no launch is being encoded (a handle can only cross into a
/// child as part of its arguments).
pub fn register_outgoing(raw: RawHandle) -> Option<u32> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let v = o.as_mut()?;
        v.push(raw);
        Some((v.len() - 1) as u32)
    })
}

/// Runs `f` (which decodes a launch's arguments) with `handles` on offer.
/// Handles that `f` did not take are closed afterwards.
pub fn with_incoming<R>(handles: Vec<OwnedHandle>, f: impl FnOnce() -> R) -> R {
    let previous = INCOMING.with(|i| {
        i.borrow_mut()
            .replace(handles.into_iter().map(Some).collect())
    });
    let r = f();
    INCOMING.with(|i| *i.borrow_mut() = previous);
    r
}

/// Takes the handle at `index` from the table being decoded.
pub fn take_incoming(index: u32) -> Option<OwnedHandle> {
    INCOMING.with(|i| {
        i.borrow_mut()
            .as_mut()
            .and_then(|v| v.get_mut(index as usize))
            .and_then(Option::take)
    })
}
