//! Job names. They reach file paths (run directories) and storage keys, so only a safe
//! alphabet is accepted.

use crate::error::Invalid;

/// The longest accepted job name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a job name: `[A-Za-z0-9._-]{1,200}`, and not `.` or `..` (they are path components).
pub fn validate_job_name(field: &'static str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Invalid::new(
            field,
            format!(
                "job name must be 1 to {MAX_NAME_LEN} characters long, got {}",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(Invalid::new(
            field,
            format!(
                "job name '{}' contains {bad:?}: only letters, digits, '.', '_' and '-' are allowed",
                truncate(name)
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(Invalid::new(
            field,
            format!("job name '{name}' is reserved"),
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Shortens user input quoted back in an error message.
pub fn truncate(text: &str) -> String {
    const KEEP: usize = 80;
    match text.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_safe_alphabet() {
        assert!(validate_job_name("name", "daily_users-v2.export").is_ok());
        assert!(validate_job_name("name", &"a".repeat(200)).is_ok());
    }

    #[test]
    fn rejects_paths_spaces_and_lengths() {
        for bad in ["", "a/b", "../etc", "a b", "é", "..", ".", &"a".repeat(201)] {
            let err = validate_job_name("name", bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad}");
        }
    }
}
