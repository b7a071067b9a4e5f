//! Dropping capabilities once every socket is bound: nothing after start-up
//! needs CAP_NET_BIND_SERVICE, CAP_NET_RAW or any other capability (transfer
//! sockets use ephemeral ports; files are read with the process's uid).

use caps::CapSet;

#[derive(Debug, thiserror::Error)]
#[error("cannot drop capabilities")]
pub struct PrivError(#[source] pub caps::errors::CapsError);

impl PrivError {
    pub fn hint(&self) -> &'static str {
        "the server keeps running with its current capabilities"
    }
}

/// Clears the effective, permitted, inheritable and ambient sets of the
/// whole process (all threads: call before spawning workers).
pub fn drop_all_capabilities() -> Result<(), PrivError> {
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(PrivError)?;
    }
    Ok(())
}
