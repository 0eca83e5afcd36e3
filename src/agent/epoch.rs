//! Which server epochs an agent believes (docs/security.md, "Epochs").
//!
//! An agent refuses commands from an epoch older than the newest it has seen (the fence), and
//! keeps that epoch on disk. A registration that raises it is believed only from a server that
//! proved itself: over TLS with a verified certificate, or with a proof made with the epoch
//! key the agent was given (`--epoch-key-file`, the server's `[agents] epoch_key_file`). Over
//! plain ws:// without a key nothing is proved, and the agent believes only an epoch a real
//! server could have: a server's epoch is the time it started leading, in ms, so one far
//! ahead of the agent's clock is forged (a man in the middle sending u64::MAX would otherwise
//! lock the real server out for good).

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use dron_task::secret::{hex, unhex};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far ahead of the agent's clock an unproved epoch may be: clocks' skew, with margin.
pub const UNPROVED_AHEAD_LIMIT_MS: u64 = 10 * 60 * 1000;
/// The least length of an epoch key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The key servers prove their epochs with, shared with the agents.
#[derive(Clone)]
pub struct EpochKey(Vec<u8>);

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochKey(<secret>)")
    }
}

impl EpochKey {
    /// Reads the key from `path`, trimmed.
    pub fn load(path: &Path) -> anyhow::Result<EpochKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the epoch key {}", path.display()))?;
        let key = text.trim();
        anyhow::ensure!(
            key.len() >= MIN_KEY_BYTES,
            "the epoch key in {} is {} bytes long; at least {MIN_KEY_BYTES} are needed (e.g. \
             `head -c 32 /dev/urandom | base64 > {}`, the same file on the servers and agents)",
            path.display(),
            key.len(),
            path.display()
        );
        Ok(EpochKey(key.as_bytes().to_vec()))
    }

    fn mac(&self, nonce: &str, epoch: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(format!("dron-epoch-v1\n{nonce}\n{epoch}").as_bytes());
        mac
    }

    /// The proof that a server holding this key registered the agent that sent `nonce` at
    /// `epoch`: hex HMAC-SHA256.
    pub fn prove(&self, nonce: &str, epoch: u64) -> String {
        hex(&self.mac(nonce, epoch).finalize().into_bytes())
    }

    /// Whether `proof` is [`EpochKey::prove`]'s for `nonce` and `epoch` (compared in constant time).
    pub fn verify(&self, nonce: &str, epoch: u64, proof: &str) -> bool {
        let Some(bytes) = unhex(proof) else {
            return false;
        };
        self.mac(nonce, epoch).verify_slice(&bytes).is_ok()
    }
}

/// A fresh nonce for one registration: 16 random bytes, hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let drawn = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if drawn.is_err() {
        // No /dev/urandom: the clock's nanoseconds still differ between registrations.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = now.to_le_bytes();
    }
    hex(&bytes)
}

/// What the server of a session proved about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Reached over TLS, its certificate verified.
    Certificate,
    /// Its registration carried a valid proof made with the agent's epoch key.
    Key,
    /// The agent holds an epoch key and the server's proof was missing or wrong.
    KeyFailed,
    /// Plain ws:// and no key: nothing was proved.
    Nothing,
}

/// Whether a registration at `epoch` may raise the agent's fence from `newest`; Err: why not.
pub fn check_jump(newest: u64, epoch: u64, proof: Proof, now_ms: u64) -> Result<(), String> {
    if epoch <= newest {
        // Not a jump (an older epoch is the fence's to refuse).
        return Ok(());
    }
    match proof {
        Proof::Certificate | Proof::Key => Ok(()),
        Proof::KeyFailed => Err(format!(
            "the server's epoch {epoch} is above this agent's {newest} and the server did not \
             prove it with the epoch key (--epoch-key-file): a server without the key, or a \
             man in the middle"
        )),
        Proof::Nothing if epoch <= now_ms.saturating_add(UNPROVED_AHEAD_LIMIT_MS) => Ok(()),
        Proof::Nothing => Err(format!(
            "the server's epoch {epoch} is above this agent's {newest} and more than {} min \
             ahead of this machine's clock: no real server's epoch is (it is the time it \
             started leading). Over plain ws:// nothing proves a server; use wss:// or an \
             epoch key (docs/security.md)",
            UNPROVED_AHEAD_LIMIT_MS / 60_000
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000_000;

    fn key() -> EpochKey {
        EpochKey(b"0123456789abcdef-key".to_vec())
    }

    #[test]
    fn proofs_hold_for_their_nonce_and_epoch_only() {
        let proof = key().prove("n1", 42);
        assert_eq!(proof.len(), 64);
        assert!(key().verify("n1", 42, &proof));
        assert!(!key().verify("n2", 42, &proof), "another registration");
        assert!(!key().verify("n1", 43, &proof), "another epoch");
        assert!(!EpochKey(b"another-key-of-length".to_vec()).verify("n1", 42, &proof));
        assert!(!key().verify("n1", 42, "zz"));
        assert!(!key().verify("n1", 42, ""));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 32);
    }

    #[test]
    fn a_proved_server_may_raise_the_epoch_as_far_as_it_likes() {
        for proof in [Proof::Certificate, Proof::Key] {
            assert!(check_jump(5, u64::MAX, proof, NOW).is_ok());
        }
    }

    #[test]
    fn a_server_that_failed_the_key_raises_nothing() {
        let refused = check_jump(NOW - 10, NOW, Proof::KeyFailed, NOW).unwrap_err();
        assert!(refused.contains("epoch key"), "{refused}");
        assert!(
            check_jump(NOW, NOW, Proof::KeyFailed, NOW).is_ok(),
            "the same epoch"
        );
        assert!(
            check_jump(NOW, 7, Proof::KeyFailed, NOW).is_ok(),
            "older: the fence's"
        );
    }

    #[test]
    fn without_proof_an_epoch_far_ahead_of_the_clock_is_refused() {
        // A restarted server's epoch (its start, in ms) is believed...
        assert!(check_jump(NOW - 60_000, NOW, Proof::Nothing, NOW).is_ok());
        let skewed = NOW + UNPROVED_AHEAD_LIMIT_MS;
        assert!(check_jump(NOW - 60_000, skewed, Proof::Nothing, NOW).is_ok());
        // ...a forged one is not.
        let refused = check_jump(NOW, u64::MAX, Proof::Nothing, NOW).unwrap_err();
        assert!(
            refused.contains("ahead of this machine's clock"),
            "{refused}"
        );
        assert!(check_jump(NOW, skewed + 1, Proof::Nothing, NOW).is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, " short \n").unwrap();
        assert!(EpochKey::load(&path).is_err());
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let key = EpochKey::load(&path).unwrap();
        assert!(key.verify(
            "n",
            1,
            &EpochKey(b"0123456789abcdef".to_vec()).prove("n", 1)
        ));
    }
}
