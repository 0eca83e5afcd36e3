//! Run directories (`<runs root>/<job>/<target>-<attempt>/`, on the server's local agent and on
//! each remote agent): which ones retention deletes, and the disk they use.
//!
//! A run directory is local to its machine, so each machine prunes its own on its own clock:
//! nothing about it is replicated. One goes once its run is finished (its shim wrote
//! `status.json`), its target is before the cut-off, and its target is not among its job's
//! newest `keep_runs` targets (every attempt of a kept target is kept).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dron_task::STATUS_FILE;

/// Bytes and inodes (files and directories) under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl Usage {
    /// What `path` and everything under it use; what cannot be read counts as nothing.
    pub fn of(path: &Path) -> Usage {
        let mut usage = Usage::default();
        usage.add(path);
        usage
    }

    fn add(&mut self, path: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        self.inodes += 1;
        if !meta.is_dir() {
            self.bytes += meta.len();
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            self.add(&entry.path());
        }
    }
}

/// One run directory retention would delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub path: PathBuf,
    /// `<job>/<target>-<attempt>`, as shown by `dron gc --dry-run`.
    pub name: String,
}

/// The run directories under `runs_root` that retention deletes: finished, with a target before
/// `before_ms`, and not among their job's newest `keep_runs` targets. `skip` names task ids
/// that must stay whatever their age (a remote agent's unacknowledged tasks).
pub fn expired(
    runs_root: &Path,
    keep_runs: usize,
    before_ms: i64,
    skip: &dyn Fn(&str, i64, u32) -> bool,
) -> Vec<Expired> {
    let mut found = Vec::new();
    let Ok(jobs) = std::fs::read_dir(runs_root) else {
        return found;
    };
    for job in jobs.flatten() {
        let Some(name) = job.file_name().to_str().map(str::to_string) else {
            continue;
        };
        found.extend(expired_of_job(
            &job.path(),
            &name,
            keep_runs,
            before_ms,
            skip,
        ));
    }
    found
}

fn expired_of_job(
    job_dir: &Path,
    job: &str,
    keep_runs: usize,
    before_ms: i64,
    skip: &dyn Fn(&str, i64, u32) -> bool,
) -> Vec<Expired> {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    // Run directories by target, newest first.
    let mut by_target: BTreeMap<std::cmp::Reverse<i64>, Vec<(u32, String)>> = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some((target, attempt)) = parse_run_name(&name) {
            let runs = by_target.entry(std::cmp::Reverse(target)).or_default();
            runs.push((attempt, name));
        }
    }
    let mut expired = Vec::new();
    for (std::cmp::Reverse(target), runs) in by_target.into_iter().skip(keep_runs) {
        if target >= before_ms {
            continue;
        }
        for (attempt, name) in runs {
            let path = job_dir.join(&name);
            if skip(job, target, attempt) || !path.join(STATUS_FILE).exists() {
                continue; // still running, or its end not reported yet
            }
            expired.push(Expired {
                path,
                name: format!("{job}/{name}"),
            });
        }
    }
    expired
}

/// `<target>-<attempt>`, the target possibly negative.
fn parse_run_name(name: &str) -> Option<(i64, u32)> {
    let (target, attempt) = name.rsplit_once('-')?;
    Some((target.parse().ok()?, attempt.parse().ok()?))
}

/// Deletes run directories (and a job's directory once it is empty), answering the bytes and
/// inodes freed. A directory already gone is not an error: the next pass looks again.
pub fn remove(expired: &[Expired]) -> Usage {
    let mut freed = Usage::default();
    for run in expired {
        let usage = Usage::of(&run.path);
        match std::fs::remove_dir_all(&run.path) {
            Ok(()) => {
                freed.bytes += usage.bytes;
                freed.inodes += usage.inodes;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %run.path.display(), %error, "could not delete a run directory");
            }
        }
        if let Some(job_dir) = run.path.parent() {
            // Fails while the job has other runs: that is the check.
            let _ = std::fs::remove_dir(job_dir);
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(root: &Path, job: &str, target: i64, attempt: u32, finished: bool) {
        let dir = root.join(job).join(format!("{target}-{attempt}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stdout"), "out").unwrap();
        if finished {
            std::fs::write(dir.join(STATUS_FILE), "{}").unwrap();
        }
    }

    fn names(expired: &[Expired]) -> Vec<String> {
        let mut names: Vec<String> = expired.iter().map(|e| e.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn old_finished_runs_beyond_the_newest_go_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for target in 1..=5 {
            run(root, "a", target * 1000, 0, true);
        }
        run(root, "a", 1000, 1, true); // a second attempt of an old target
        run(root, "a", 2000, 1, false); // still running
        run(root, "b", 1000, 0, true); // the newest of its job
        let never = |_: &str, _: i64, _: u32| false;
        // Keep 2 targets; a cut-off at 4500 makes 1000..3000 old enough.
        let expired = expired(root, 2, 4500, &never);
        assert_eq!(
            names(&expired),
            ["a/1000-0", "a/1000-1", "a/2000-0", "a/3000-0"]
        );
        // Within max_age: nothing goes however many there are.
        assert!(super::expired(root, 0, 1000, &never).is_empty());
        let skip_a3 = |job: &str, target: i64, _: u32| job == "a" && target == 3000;
        assert_eq!(super::expired(root, 2, 4500, &skip_a3).len(), 3);

        let before = Usage::of(root);
        let freed = remove(&expired);
        assert_eq!(freed.inodes, 4 * 3, "a directory and two files each");
        assert_eq!(Usage::of(root).inodes, before.inodes - freed.inodes);
        assert!(root.join("a/2000-1").exists() && root.join("a/5000-0").exists());
        assert!(root.join("b/1000-0").exists());
    }

    #[test]
    fn an_emptied_job_directory_goes_too() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), "gone", 1, 0, true);
        let expired = expired(dir.path(), 0, 10, &|_, _, _| false);
        remove(&expired);
        assert!(!dir.path().join("gone").exists());
    }
}
