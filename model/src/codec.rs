//! How records are stored: one format-version byte, then postcard.
//!
//! postcard is not self-describing, so the version byte is what lets a later release read
//! records an older one wrote (bump [`FORMAT_VERSION`] and keep a decoder for the old one).

use serde::{Serialize, de::DeserializeOwned};

/// 2: jobs gained `dependsOn`, `waitTimeout`, `triggeredBy` and a time zone; instances the
/// resources they wait for. Version 1 came only from development builds before any release.
pub const FORMAT_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record has format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("record does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data structs into a Vec cannot fail.
    postcard::to_extend(value, vec![FORMAT_VERSION])
        .expect("postcard encodes plain data into a Vec")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((&other, _)) => Err(CodecError::UnknownVersion(other)),
    }
}
