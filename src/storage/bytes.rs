//! `#[serde(with = "crate::storage::bytes")]` for a `Vec<u8>` field: serialized as bytes, not
//! as a sequence of numbers. In postcard both are the length then the bytes (the same wire
//! format, so logs and messages written before read the same), but serde walks a sequence a
//! byte at a time: encoding and decoding the cluster's entries that way was about a tenth of
//! the leader's instructions per create (docs/benchmarks.md). Formats that write bytes as a
//! sequence (JSON) are read back either way.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("bytes")
    }

    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsSeq {
        key: Vec<u8>,
        value: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsBytes {
        #[serde(with = "super")]
        key: Vec<u8>,
        #[serde(with = "super")]
        value: Vec<u8>,
    }

    #[test]
    fn bytes_are_written_as_a_sequence_of_bytes_was_and_read_back_from_either() {
        let long: Vec<u8> = (0..=255).cycle().take(1000).collect();
        for (key, value) in [(vec![], vec![]), (b"job-1".to_vec(), long)] {
            let seq = AsSeq {
                key: key.clone(),
                value: value.clone(),
            };
            let bytes = AsBytes { key, value };
            let encoded = postcard::to_stdvec(&bytes).unwrap();
            assert_eq!(encoded, postcard::to_stdvec(&seq).unwrap(), "postcard");
            assert_eq!(postcard::from_bytes::<AsSeq>(&encoded).unwrap(), seq);
            assert_eq!(postcard::from_bytes::<AsBytes>(&encoded).unwrap(), bytes);
            let json = serde_json::to_string(&bytes).unwrap();
            assert_eq!(json, serde_json::to_string(&seq).unwrap(), "JSON");
            assert_eq!(serde_json::from_str::<AsBytes>(&json).unwrap(), bytes);
        }
    }
}
