//! The bottom layer: small helpers on `std` alone that every other module
//! may use, the OS layer (`sys`) included. Nothing here imports from the
//! rest of the crate.

pub(crate) mod hex;
pub(crate) mod lock;
