//! A task's secret environment variables (a job's `"secret": true` ones).
//!
//! They travel in the clear in memory and in the launch the server sends an agent, but a run
//! directory never holds them in plain text: the agent seals them before it writes
//! `task.json`, with a key it made at start and keeps in memory, and hands that key to the
//! shims it starts (the launcher's environment, or the shim's own); the shim opens them and
//! gives them to the task only. A run directory copied, backed up or left behind after the
//! agent stopped reveals nothing, and a task whose agent restarted before its shim started
//! fails saying its secrets are gone (its retry is a new launch, sealed with the new key).
//!
//! The seal is the ChaCha20 keystream of the agent's key at a random stream id, XORed with the
//! variables' JSON; the first bytes of the stream, kept as `check`, tell a wrong key apart.
//! Confidentiality only: whoever can change `task.json` can change the command anyway.

use std::fmt;

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The environment variable that hands a shim (or the launcher that forks shims) the key.
pub const SEAL_KEY_ENV: &str = "DRON_SEAL_KEY";

/// The key secrets are sealed with: 32 bytes from the kernel's generator.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// A new random key.
    pub fn generate() -> std::io::Result<SealKey> {
        use std::io::Read;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(SealKey(key))
    }

    /// The key as the environment carries it (hex).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<SealKey> {
        unhex(text)?.try_into().ok().map(SealKey)
    }

    /// The key handed over in [`SEAL_KEY_ENV`], if any.
    pub fn from_env() -> Option<SealKey> {
        SealKey::from_hex(&std::env::var(SEAL_KEY_ENV).ok()?)
    }

    fn keystream(&self, stream: u64, len: usize) -> Vec<u8> {
        let mut rng = ChaCha20Rng::from_seed(self.0);
        rng.set_stream(stream);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        bytes
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// How many bytes of the keystream tell a wrong key apart.
const CHECK_LEN: usize = 16;

/// A task's secret variables: in the clear in a launch, sealed in `task.json`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum SecretEnv {
    #[default]
    None,
    Plain(Vec<(String, String)>),
    /// `check` is the keystream's first bytes, `data` the variables' JSON XORed with the
    /// bytes after them (both hex).
    Sealed {
        stream: u64,
        check: String,
        data: String,
    },
}

impl SecretEnv {
    pub fn is_none(&self) -> bool {
        matches!(self, SecretEnv::None)
    }

    /// The same variables, sealed with `key` (already sealed or none: unchanged).
    pub fn sealed(&self, key: &SealKey) -> SecretEnv {
        let SecretEnv::Plain(variables) = self else {
            return self.clone();
        };
        let plain = serde_json::to_vec(variables).expect("strings encode as JSON");
        let stream = u64::from_le_bytes(random_stream());
        let keystream = key.keystream(stream, CHECK_LEN + plain.len());
        let (check, pad) = keystream.split_at(CHECK_LEN);
        let data: Vec<u8> = plain.iter().zip(pad).map(|(a, b)| a ^ b).collect();
        SecretEnv::Sealed {
            stream,
            check: hex(check),
            data: hex(&data),
        }
    }

    /// The variables in the clear; an error when they are sealed with another key (the
    /// agent that sealed them is gone) or damaged.
    pub fn open(&self, key: Option<&SealKey>) -> Result<Vec<(String, String)>, String> {
        let (stream, check, data) = match self {
            SecretEnv::None => return Ok(Vec::new()),
            SecretEnv::Plain(variables) => return Ok(variables.clone()),
            SecretEnv::Sealed {
                stream,
                check,
                data,
            } => (*stream, check, data),
        };
        const GONE: &str = "the task's secret variables are sealed with a key this shim was not \
                            given (its agent restarted before the task started)";
        let key = key.ok_or(GONE)?;
        let damaged = || "the task's sealed secret variables are damaged".to_string();
        let data = unhex(data).ok_or_else(damaged)?;
        let keystream = key.keystream(stream, CHECK_LEN + data.len());
        let (expected, pad) = keystream.split_at(CHECK_LEN);
        if unhex(check).as_deref() != Some(expected) {
            return Err(GONE.to_string());
        }
        let plain: Vec<u8> = data.iter().zip(pad).map(|(a, b)| a ^ b).collect();
        serde_json::from_slice(&plain).map_err(|_| damaged())
    }
}

/// Debug output reaches logs: values never do.
impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretEnv::None => f.write_str("None"),
            SecretEnv::Plain(variables) => {
                let names: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
                write!(f, "Plain({names:?}, values hidden)")
            }
            SecretEnv::Sealed { .. } => f.write_str("Sealed(..)"),
        }
    }
}

/// A stream id no two seals of one key share (in practice: 64 random bits).
fn random_stream() -> [u8; 8] {
    SealKey::generate().map_or_else(
        |_| {
            // No /dev/urandom: the clock's nanoseconds still differ between seals.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos.to_le_bytes()
        },
        |random| random.0[..8].try_into().expect("8 of 32 bytes"),
    )
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`hex`]'s text; None when it is not.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> SecretEnv {
        SecretEnv::Plain(vec![("TOKEN".into(), "hunter2".into())])
    }

    #[test]
    fn sealed_secrets_open_with_their_key_only() {
        let key = SealKey::generate().unwrap();
        let sealed = secrets().sealed(&key);
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(
            !json.contains("hunter2") && !json.contains("TOKEN"),
            "{json}"
        );
        let opened = sealed.open(Some(&key)).unwrap();
        assert_eq!(opened, [("TOKEN".to_string(), "hunter2".to_string())]);
        let other = SealKey::generate().unwrap();
        assert!(sealed.open(Some(&other)).unwrap_err().contains("restarted"));
        assert!(sealed.open(None).is_err());
        // Two seals of the same secrets differ (a stream each).
        assert_ne!(sealed, secrets().sealed(&key));
    }

    #[test]
    fn keys_travel_as_hex_and_never_show() {
        let key = SealKey::generate().unwrap();
        assert_eq!(SealKey::from_hex(&key.to_hex()), Some(key.clone()));
        assert_eq!(SealKey::from_hex("abc"), None);
        assert_eq!(SealKey::from_hex("zz"), None);
        assert_eq!(format!("{key:?}"), "SealKey(..)");
        assert!(!format!("{:?}", secrets()).contains("hunter2"));
    }
}
