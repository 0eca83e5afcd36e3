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
    /// 404.
    #[error("backfill '{0}' does not exist")]
    BackfillNotFound(String),
    /// The request is valid but clashes with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The server cannot answer now; retrying later may work (503).
    #[error("{0}")]
    Unavailable(String),
    /// The change cannot be made durable: the disk is full (507). Retrying once space has
    /// returned works.
    #[error("{0}")]
    InsufficientStorage(String),
}

impl CommandError {
    /// A failure of the store named `store`: 507 for a full disk, 503 otherwise.
    pub fn storage(store: &str, error: &crate::store::StoreError) -> CommandError {
        let message = format!("{store}: {error}");
        match error.is_no_space() {
            true => CommandError::InsufficientStorage(message),
            false => CommandError::Unavailable(message),
        }
    }
}

impl From<crate::store::StoreError> for CommandError {
    /// A full disk is 507; any other storage failure passes too (a shard is rebuilt from
    /// storage): 503.
    fn from(error: crate::store::StoreError) -> Self {
        match error.is_no_space() {
            true => CommandError::InsufficientStorage(error.to_string()),
            false => CommandError::Unavailable(error.to_string()),
        }
    }
}
