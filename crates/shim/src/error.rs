use std::io;

use containerd_shim_protos::ttrpc::{self, Code};

/// Errors of the shim core. Each maps to the ttrpc code containerd expects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// Also carries the core's own I/O errors, with their context.
    #[error(transparent)]
    Executor(#[from] barge_executor::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let wrap = barge_executor::Error::io(context);
        move |source| Error::Executor(wrap(source))
    }

    pub fn code(&self) -> Code {
        use barge_executor::Error as E;
        match self {
            Error::InvalidArgument(_) | Error::Executor(E::InvalidArgument(_)) => {
                Code::INVALID_ARGUMENT
            }
            Error::NotFound(_) | Error::Executor(E::NotFound(_)) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) | Error::Executor(E::FailedPrecondition(_)) => {
                Code::FAILED_PRECONDITION
            }
            Error::Unimplemented(_) | Error::Executor(E::Unimplemented(_)) => Code::UNIMPLEMENTED,
            _ => Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::io("system call")(io::Error::from(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
