//! Serialisation that keeps a `Serialize` impl's own error text.
//!
//! A `Serialize` impl refuses with `S::Error::custom("why")`; postcard's
//! error type keeps only its kind (`SerdeSerCustom`, "Serde Serialization
//! Error") and drops the text. `crate::encode`'s wrapper keeps it (and
//! records nothing else here: its shape is `()`). The wrapper costs a
//! little on every value, so an encode is plain postcard first, and only
//! a failed one runs the value through the wrapper (into a sink) to learn
//! the text: a `Serialize` impl refuses the same way twice. If the second
//! run does not refuse (an impl whose refusal is not repeatable),
//! postcard's own error is reported.

use serde::ser::Serialize;

use super::EncodeError;
use crate::encode::{Record, Value};

/// Serialises `value` as postcard into a new vector; a failure keeps the
/// refusing impl's text.
///
/// This is `postcard::to_stdvec` for values whose errors reach a user:
/// a launch's, a pool task's or an initializer's arguments.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_stdvec(value).map_err(|e| refusal(value, e))
}

/// The error for `value`, which postcard refused with `e`: serialises it
/// again through the wrapper, into a sink, to learn the refusal's text.
#[cold]
fn refusal<T: Serialize + ?Sized>(value: &T, e: postcard::Error) -> EncodeError {
    let record = Record::new(());
    let _ = postcard::to_io(&Value::new(value, &record), std::io::sink());
    record.error(e)
}

/// `value` through the wrapper alone (tests: it must write what postcard
/// writes).
#[cfg(test)]
pub(super) fn wrapped_to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let record = Record::new(());
    postcard::to_stdvec(&Value::new(value, &record)).map_err(|e| record.error(e))
}
