//! Why a command sent to the actors was refused. The HTTP layer maps each to a status code.

use dron_model::error::Invalid;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The request is malformed (400).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// 404.
    #[error("job '{0}' does not exist")]
    JobNotFound(String),
    /// 404.
    #[error("task '{0}' is not running")]
    TaskNotFound(String),
    /// The request is valid but clashes with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The server cannot answer now; retrying later may work (503).
    #[error("{0}")]
    Unavailable(String),
}
