use std::io;

/// What an executor reports. The shim core maps each kind to a ttrpc code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or the bundle is wrong: a bad spec, option or id.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The container or process does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The container is in the wrong state for the call.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The executor can't do this at all.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The runtime (libcontainer, an OCI binary, wasmtime) failed.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
