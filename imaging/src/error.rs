//! The error of the engine's operations (backup, restore, clone, check), with
//! the categories the binaries map to exit codes.

use crate::blockdev::BlockError;
use crate::image::ImageError;
use crate::part::PartError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A safety check refused the operation; nothing was written.
    #[error("refused: {reason}")]
    Refused { reason: String, hint: String },
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// An external tool (resize2fs, ntfsresize, losetup) failed.
    #[error("{cmd} failed: {detail}")]
    Tool { cmd: String, detail: String },
    #[error("cancelled by the user")]
    Cancelled,
    /// Reading the source failed partway (a network store went away); says
    /// what happened and what state the target is in.
    #[error("{detail}")]
    Interrupted { detail: String, hint: String },
    /// Written data does not read back as planned.
    #[error("verification failed: {0}")]
    Verify(String),
}

impl From<crate::task::Cancelled> for Error {
    fn from(_: crate::task::Cancelled) -> Self {
        Error::Cancelled
    }
}

/// What kind of failure, for exit codes and UI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Failed,
    Refused,
    Verification,
    Cancelled,
}

impl Error {
    pub fn refused(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Refused { reason: reason.into(), hint: hint.into() }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Refused { .. } | Error::Block(BlockError::Busy { .. }) | Error::Block(BlockError::IdentityChanged { .. }) => {
                ErrorClass::Refused
            }
            Error::Image(ImageError::Cancelled(_)) | Error::Cancelled => ErrorClass::Cancelled,
            Error::Image(e) if e.is_verification_failure() => ErrorClass::Verification,
            Error::Verify(_) => ErrorClass::Verification,
            _ => ErrorClass::Failed,
        }
    }

    /// What the user can do next.
    pub fn hint(&self) -> String {
        match self {
            Error::Refused { hint, .. } => hint.clone(),
            Error::Block(e) => e.hint().into(),
            Error::Image(e) => e.hint().into(),
            Error::Part(e) => e.hint().into(),
            Error::Io { .. } => "check the device or file and its free space, then try again".into(),
            Error::Tool { .. } => "install the tool or run the step by hand; the data itself was written".into(),
            Error::Cancelled => "nothing more to do".into(),
            Error::Interrupted { hint, .. } => hint.clone(),
            Error::Verify(_) => "the target or its medium may be failing: check it and run the operation again".into(),
        }
    }
}
