//! `dron gc`, `dron backup` (both ask a running server) and `dron restore` (offline).

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Failure, Outcome};
use super::table::pretty;

/// Runs a retention pass on the server now, or (`dry_run`) prints what one would delete.
pub async fn gc(client: &Client, dry_run: bool, json: bool) -> Outcome {
    let body = json!({ "dryRun": dry_run });
    let report = client.call(Method::POST, "/api/gc", Some(&body)).await?;
    if json {
        println!("{}", pretty(&report));
        return Ok(());
    }
    print!("{}", gc_text(&report));
    Ok(())
}

/// The report as people read it: the cut-offs, then each kind with its count and names.
fn gc_text(report: &Value) -> String {
    let verb = match report["dryRun"].as_bool() {
        Some(true) => "would delete",
        _ => "deleted",
    };
    let mut text = format!(
        "runs before {}, resources before {}, notices before {}\n",
        report["runsBefore"].as_str().unwrap_or("?"),
        report["resourcesBefore"].as_str().unwrap_or("?"),
        report["noticesBefore"].as_str().unwrap_or("?"),
    );
    for (key, what) in [
        ("history", "history entries"),
        ("resources", "satisfied resources"),
        ("notices", "notices"),
        ("runDirectories", "run directories"),
    ] {
        let kind = &report[key];
        let count = kind["count"].as_u64().unwrap_or(0);
        let bytes = kind["bytes"]
            .as_u64()
            .map(|b| format!(" ({b} bytes)"))
            .unwrap_or_default();
        text.push_str(&format!("{verb} {count} {what}{bytes}\n"));
        for name in kind["sample"].as_array().into_iter().flatten() {
            text.push_str(&format!("  {}\n", name.as_str().unwrap_or("?")));
        }
        if count > kind["sample"].as_array().map_or(0, |s| s.len() as u64) {
            text.push_str("  ...\n");
        }
    }
    for error in report["errors"].as_array().into_iter().flatten() {
        text.push_str(&format!("error: {}\n", error.as_str().unwrap_or("?")));
    }
    text
}

/// Asks the server to back up its stores into `dir`, on the server's machine (a relative
/// path is taken from this directory, for a server on this machine).
pub async fn backup(client: &Client, dir: &Path) -> Outcome {
    let dir = absolute(dir)?;
    let body = json!({ "dir": dir });
    let manifest = client
        .call(Method::POST, "/api/backup", Some(&body))
        .await?;
    println!(
        "backed up {} stores ({} bytes, writes held {} ms) into {} at {}",
        manifest["stores"].as_array().map_or(0, Vec::len),
        manifest["bytes"].as_u64().unwrap_or(0),
        manifest["pausedMs"].as_u64().unwrap_or(0),
        dir.display(),
        manifest["takenAt"].as_str().unwrap_or("?"),
    );
    Ok(())
}

/// Prepares `data_dir` (new or empty) from the backup in `dir`.
pub fn restore(dir: &Path, data_dir: &Path) -> Outcome {
    let (dir, data_dir) = (absolute(dir)?, absolute(data_dir)?);
    let manifest = crate::storage::backup::restore(&dir, &data_dir)
        .map_err(|error| Failure::local(format!("{error:#}")))?;
    println!(
        "restored the {} backup taken at {} into {}; start it with: dron serve --data-dir {}",
        manifest.kind,
        manifest.taken_at,
        data_dir.display(),
        data_dir.display()
    );
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path)
        .map_err(|error| Failure::local(format!("{}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_report_reads_as_what_would_go() {
        let report = json!({
            "dryRun": true,
            "runsBefore": "2026-12-01T00:00:00.000Z",
            "resourcesBefore": "2026-11-01T00:00:00.000Z",
            "noticesBefore": "2026-11-01T00:00:00.000Z",
            "history": {"count": 3, "sample": ["a (3 entries)"]},
            "resources": {"count": 2, "sample": ["r1"]},
            "notices": {"count": 0, "sample": []},
            "runDirectories": {"count": 1, "bytes": 10, "sample": ["a/1-0"]},
            "errors": []
        });
        let text = gc_text(&report);
        assert!(
            text.starts_with("runs before 2026-12-01T00:00:00.000Z,"),
            "{text}"
        );
        assert!(text.contains("would delete 3 history entries\n  a (3 entries)\n"));
        assert!(text.contains("would delete 2 satisfied resources\n  r1\n  ...\n"));
        assert!(text.contains("would delete 1 run directories (10 bytes)\n  a/1-0\n"));
    }
}
