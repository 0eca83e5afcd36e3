//! How records are stored: one format-version byte, then postcard.
//!
//! postcard is not self-describing, so the version byte is what lets a later release read
//! records an older one wrote. Every stored type implements [`Stored`], which says how to read
//! the older versions whose layout differs (most types kept theirs, and read them as they are).

use serde::{Serialize, de::DeserializeOwned};

/// 7: instances gained `first_attempt` (reruns number their attempts apart); shards gained
/// a `backfills` family.
/// 6: jobs' environment variables gained `secret`.
/// 5: jobs gained the times of their parents' successes counted (`parent_success_times`).
/// 4: instances gained the agent they run on and their count of attempts lost with an agent.
/// 3: jobs gained `notifyWebhooks` and `builtinSleepMs`; shards gained an outbox of notices.
/// 2: jobs gained `dependsOn`, `waitTimeout`, `triggeredBy` and a time zone; instances the
/// resources they wait for. Version 1 came only from development builds before any release.
pub const FORMAT_VERSION: u8 = 7;
/// The oldest version this build reads.
pub const OLDEST_READABLE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error(
        "record has format version {0}, this build reads versions {OLDEST_READABLE} to {FORMAT_VERSION}"
    )]
    UnknownVersion(u8),
    #[error("record does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

/// A type kept in storage.
pub trait Stored: DeserializeOwned {
    /// Decodes the body of a record written by an older version (`OLDEST_READABLE..FORMAT_VERSION`).
    /// The default serves types whose layout did not change.
    fn decode_older(_version: u8, body: &[u8]) -> Result<Self, CodecError> {
        Ok(postcard::from_bytes(body)?)
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data structs into a Vec cannot fail.
    postcard::to_extend(value, vec![FORMAT_VERSION])
        .expect("postcard encodes plain data into a Vec")
}

pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((&older, body)) if (OLDEST_READABLE..FORMAT_VERSION).contains(&older) => {
            T::decode_older(older, body)
        }
        Some((&other, _)) => Err(CodecError::UnknownVersion(other)),
    }
}
