//! A remote agent's credential: `NAME.SECRET`, where SECRET is 64 hex digits from the
//! kernel's random source. The name is the agent's (the server takes it from the credential,
//! not from what the agent says); the server keeps only the secret's SHA-256.

use sha2::{Digest, Sha256};

use crate::storage::agent_tokens::AgentTokenRecord;

const SECRET_BYTES: usize = 32;
/// Longest agent name a credential may carry.
pub const MAX_NAME: usize = 64;

/// Why a name cannot have a credential, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(allowed) {
        return Err(format!(
            "agent name '{name}' must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
        ));
    }
    if name == dron_task::LOCAL_AGENT {
        return Err(format!("'{name}' is the server's own agent"));
    }
    Ok(())
}

/// A new credential for `name` (checked), and what the server keeps of it.
pub fn generate(name: &str, now_ms: i64) -> Result<(String, AgentTokenRecord), String> {
    check_name(name)?;
    let mut secret = [0u8; SECRET_BYTES];
    fill_random(&mut secret)?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let record = AgentTokenRecord {
        hash: hash(&secret),
        created_ms: now_ms,
    };
    Ok((format!("{name}.{secret}"), record))
}

/// The credential's agent name and secret; None when it is not one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (name, secret) = token.trim().rsplit_once('.')?;
    let hex = secret.len() == 2 * SECRET_BYTES && secret.chars().all(|c| c.is_ascii_hexdigit());
    (hex && check_name(name).is_ok()).then_some((name, secret))
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` is the one `record` was made from (in constant time).
pub fn matches(record: &AgentTokenRecord, secret: &str) -> bool {
    let candidate = hash(secret);
    let difference = candidate
        .iter()
        .zip(record.hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// The credential in `file`, if one is given, and the agent's name: `name` as given, else
/// the credential's (they must agree).
pub fn read_for(
    file: Option<&std::path::Path>,
    name: Option<String>,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    use anyhow::Context;
    let Some(file) = file else {
        return Ok((None, name));
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the agent credential {}", file.display()))?;
    let token = text.trim().to_string();
    let Some((named, _)) = parse(&token) else {
        anyhow::bail!(
            "{} does not hold an agent credential (NAME.SECRET, from `dron agent-token create NAME`)",
            file.display()
        );
    };
    if let Some(given) = &name {
        anyhow::ensure!(
            given == named,
            "--name {given} differs from the credential's agent name '{named}'"
        );
    }
    let named = named.to_string();
    Ok((Some(token), Some(named)))
}

fn fill_random(buffer: &mut [u8]) -> Result<(), String> {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: getrandom(2) writes at most `rest.len()` bytes into `rest`, which we own.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("no random bytes for a credential: {error}"));
            }
            continue;
        }
        filled += got as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_names_its_agent_and_matches_only_its_record() {
        let (token, record) = generate("w-1.eu", 5).unwrap();
        let (name, secret) = parse(&token).unwrap();
        assert_eq!(name, "w-1.eu");
        assert!(matches(&record, secret));
        let (other, _) = generate("w-1.eu", 5).unwrap();
        assert_ne!(token, other, "every credential is new");
        assert!(!matches(&record, parse(&other).unwrap().1));
        assert!(parse("w1").is_none());
        assert!(parse("w1.abc").is_none());
        assert!(generate("local", 0).is_err());
        assert!(generate("a b", 0).is_err());
        assert!(generate("", 0).is_err());
    }
}
