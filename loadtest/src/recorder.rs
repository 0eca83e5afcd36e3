//! The run recorder: each load job's command writes down its own run, so the checker can trust
//! what actually ran rather than what the server says ran.
//!
//! # Runs files
//!
//! One file per job, `<runs_dir>/<job>.runs`, plain text, one event per line, fields separated by
//! single spaces. Every line is written by one `echo ... >>file` (an `O_APPEND` write of one short
//! line), so runs of the same job that overlap cannot interleave inside a line.
//!
//! ```text
//! created <job> <ms>
//! start <job> <start_ms> <pid> <target> <attempt> <task_id>
//! end <job> <end_ms> <pid> <start_ms> <exit_code>
//! ```
//!
//! - `ms` values are Unix epoch milliseconds (`date +%s%3N`).
//! - `created` is written by the load generator once the server acknowledged the job: no target
//!   before it is owed a run.
//! - `start` is written by the job's command before the inner command runs. `target` is
//!   `DRON_TARGET` (RFC 3339, UTC, milliseconds), `attempt` is `DRON_ATTEMPT`, `task_id` is
//!   `DRON_TASK_ID`; each is `-` when the variable is not set (a run not launched by dron).
//! - `end` is written after the inner command exits, with its exit code. It names its run by
//!   `(pid, start_ms)`: the shell's pid cannot be reused within the same millisecond.
//!
//! A run with a `start` and no `end` is *incomplete*: still running, or killed (a kill reaches the
//! whole process group, recorder included). The parser accepts that, skips lines it cannot read
//! (counting them), and ignores a last line without its newline (a write cut short).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::DateTime;

use crate::checker::{Run, RunEnd};

const EXTENSION: &str = "runs";

/// The runs file of `job` inside `runs_dir`.
pub fn runs_file(runs_dir: &Path, job: &str) -> PathBuf {
    runs_dir.join(format!("{job}.{EXTENSION}"))
}

/// A `sh` command line that records its run of `job` in `runs_dir`, then runs `inner` and exits
/// with its status. `runs_dir` should be absolute: a task's working directory is its run directory.
pub fn recorded_command(runs_dir: &Path, job: &str, inner: &str) -> anyhow::Result<String> {
    // Job names reach the line format, the file name and the shell unquoted: only a safe
    // alphabet (dron's own, so every valid job can be recorded) keeps them parseable.
    if !is_recordable_name(job) {
        bail!(
            "cannot record job '{job}': only letters, digits, '.', '_' and '-' are allowed, and not '.' or '..'"
        );
    }
    let file = shell_quote(&runs_file(runs_dir, job).to_string_lossy());
    // The inner command runs in a subshell so that an `exit` in it still reaches the end line.
    Ok(format!(
        "f={file}; s=$(date +%s%3N); \
         echo \"start {job} $s $$ ${{DRON_TARGET:--}} ${{DRON_ATTEMPT:--}} ${{DRON_TASK_ID:--}}\" >>\"$f\"; \
         ( {inner} ); c=$?; \
         echo \"end {job} $(date +%s%3N) $$ $s $c\" >>\"$f\"; exit $c"
    ))
}

/// `[A-Za-z0-9._-]+`, and not `.` or `..` (path components).
fn is_recordable_name(job: &str) -> bool {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !job.is_empty() && job.chars().all(safe) && job != "." && job != ".."
}

/// Appends the `created` line of `job`: the server acknowledged it at `acked_ms`.
pub fn record_created(runs_dir: &Path, job: &str, acked_ms: i64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = runs_file(runs_dir, job);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "created {job} {acked_ms}")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Everything read from the runs files.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    pub runs: Vec<Run>,
    /// When each job was acknowledged, from its `created` line (the latest one if several).
    pub created: HashMap<String, i64>,
    /// Lines that could not be read, and `end` lines naming no `start`.
    pub malformed: usize,
}

impl Recorded {
    /// The earliest time any line mentions: about when the load test began.
    pub fn earliest_ms(&self) -> Option<i64> {
        let starts = self.runs.iter().map(|run| run.start_ms);
        starts.chain(self.created.values().copied()).min()
    }

    fn merge(&mut self, other: Recorded) {
        self.runs.extend(other.runs);
        self.malformed += other.malformed;
        for (job, ms) in other.created {
            let entry = self.created.entry(job).or_insert(ms);
            *entry = (*entry).max(ms);
        }
    }
}

/// Reads every `*.runs` file of `runs_dir`.
pub fn read_runs_dir(runs_dir: &Path) -> anyhow::Result<Recorded> {
    let mut recorded = Recorded::default();
    let entries = std::fs::read_dir(runs_dir)
        .with_context(|| format!("cannot read runs directory {}", runs_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == EXTENSION) {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            recorded.merge(parse_runs(&text));
        }
    }
    Ok(recorded)
}

/// Parses one runs file (see the module comment). Never fails: what cannot be read is counted.
pub fn parse_runs(text: &str) -> Recorded {
    let mut recorded = Recorded::default();
    // (job, pid, start_ms) -> index in `runs`: how an end line finds its start.
    let mut open: HashMap<(String, u32, i64), usize> = HashMap::new();
    for line in complete_lines(text) {
        let fields: Vec<&str> = line.split(' ').collect();
        let ok = match fields.as_slice() {
            ["created", job, ms] => parse_created(&mut recorded, job, ms),
            ["start", job, start, pid, target, attempt, _task_id] => {
                parse_start(&mut recorded, &mut open, job, start, pid, target, attempt)
            }
            ["end", job, end, pid, start, code] => {
                parse_end(&mut recorded, &open, job, end, pid, start, code)
            }
            _ => false,
        };
        if !ok {
            recorded.malformed += 1;
        }
    }
    recorded
}

/// The lines ending in a newline: a last line without one was cut short and may be partial.
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = match text.rfind('\n') {
        Some(last) => &text[..last],
        None => "",
    };
    complete.split('\n').filter(|line| !line.is_empty())
}

fn parse_created(recorded: &mut Recorded, job: &str, ms: &str) -> bool {
    let Ok(ms) = ms.parse::<i64>() else {
        return false;
    };
    let entry = recorded.created.entry(job.to_string()).or_insert(ms);
    *entry = (*entry).max(ms);
    true
}

fn parse_start(
    recorded: &mut Recorded,
    open: &mut HashMap<(String, u32, i64), usize>,
    job: &str,
    start: &str,
    pid: &str,
    target: &str,
    attempt: &str,
) -> bool {
    let (Ok(start_ms), Ok(pid)) = (start.parse::<i64>(), pid.parse::<u32>()) else {
        return false;
    };
    let target_ms = match target {
        "-" => None,
        text => match DateTime::parse_from_rfc3339(text) {
            Ok(target) => Some(target.timestamp_millis()),
            Err(_) => return false,
        },
    };
    let attempt = match attempt {
        "-" => None,
        text => match text.parse::<u32>() {
            Ok(attempt) => Some(attempt),
            Err(_) => return false,
        },
    };
    open.insert((job.to_string(), pid, start_ms), recorded.runs.len());
    recorded.runs.push(Run {
        job: job.to_string(),
        start_ms,
        target_ms,
        attempt,
        pid,
        end: None,
    });
    true
}

fn parse_end(
    recorded: &mut Recorded,
    open: &HashMap<(String, u32, i64), usize>,
    job: &str,
    end: &str,
    pid: &str,
    start: &str,
    code: &str,
) -> bool {
    let (Ok(end_ms), Ok(pid), Ok(start_ms), Ok(exit_code)) = (
        end.parse::<i64>(),
        pid.parse::<u32>(),
        start.parse::<i64>(),
        code.parse::<i32>(),
    ) else {
        return false;
    };
    let Some(&index) = open.get(&(job.to_string(), pid, start_ms)) else {
        return false;
    };
    recorded.runs[index].end = Some(RunEnd { end_ms, exit_code });
    true
}

/// Quotes `text` for `sh` (single quotes; an embedded quote becomes `'\''`).
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "2026-11-23T10:00:00.000Z";
    const TARGET_MS: i64 = 1_795_428_000_000;

    #[test]
    fn parses_created_start_and_end() {
        let text = format!(
            "created a 1795427990000\n\
             start a 1795428000050 4242 {TARGET} 0 ct:1795428000000:0:a:\n\
             end a 1795428000090 4242 1795428000050 0\n"
        );
        let recorded = parse_runs(&text);
        assert_eq!(recorded.malformed, 0);
        assert_eq!(recorded.created["a"], 1_795_427_990_000);
        assert_eq!(
            recorded.runs,
            vec![Run {
                job: "a".into(),
                start_ms: 1_795_428_000_050,
                target_ms: Some(TARGET_MS),
                attempt: Some(0),
                pid: 4242,
                end: Some(RunEnd {
                    end_ms: 1_795_428_000_090,
                    exit_code: 0
                }),
            }]
        );
    }

    #[test]
    fn a_truncated_file_keeps_its_complete_lines_and_open_runs() {
        // Run 1 complete, run 2 still going (no end line), and a write cut short mid-line.
        let text = format!(
            "start a 1000 7 {TARGET} 0 ct\n\
             end a 1010 7 1000 0\n\
             start a 2000 8 - - -\n\
             end a 20"
        );
        let recorded = parse_runs(&text);
        assert_eq!(
            recorded.malformed, 0,
            "the partial last line is not counted"
        );
        assert_eq!(recorded.runs.len(), 2);
        assert!(recorded.runs[0].end.is_some());
        assert_eq!(recorded.runs[1].end, None);
        assert_eq!(recorded.runs[1].target_ms, None);
        assert_eq!(recorded.runs[1].attempt, None);
    }

    #[test]
    fn unreadable_lines_and_orphan_ends_are_counted_not_fatal() {
        let text = "start a notanumber 7 - - -\nend a 1010 9 1000 0\nhello\n\ncreated a 5\n";
        let recorded = parse_runs(text);
        assert_eq!(recorded.malformed, 3);
        assert!(recorded.runs.is_empty());
        assert_eq!(recorded.created["a"], 5);
    }

    #[test]
    fn overlapping_runs_pair_by_pid_and_start() {
        let text = "start a 1000 7 - - -\nstart a 1000 8 - - -\nend a 1500 8 1000 3\n";
        let recorded = parse_runs(text);
        assert_eq!(recorded.runs[0].end, None);
        assert_eq!(recorded.runs[1].end.map(|end| end.exit_code), Some(3));
    }

    #[test]
    fn the_recorded_command_writes_what_the_parser_reads() {
        let dir = std::env::temp_dir().join(format!("dron-recorder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let command = recorded_command(&dir, "job-1", "exit 3").unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", &command])
            .env("DRON_TARGET", TARGET)
            .env("DRON_ATTEMPT", "1")
            .env("DRON_TASK_ID", "ct:1795428000000:1:job-1:")
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3), "the inner command's status is kept");
        record_created(&dir, "job-1", 42).unwrap();
        let recorded = read_runs_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(recorded.malformed, 0);
        assert_eq!(recorded.created["job-1"], 42);
        let run = &recorded.runs[0];
        assert_eq!(
            (run.job.as_str(), run.target_ms, run.attempt),
            ("job-1", Some(TARGET_MS), Some(1))
        );
        let end = run.end.expect("an end line");
        assert_eq!(end.exit_code, 3);
        assert!(end.end_ms >= run.start_ms);
    }

    #[test]
    fn refuses_names_that_would_break_the_format() {
        for bad in ["a b", "", ".", "..", "a/b", "a;b", "a$b", "é", "a\nb"] {
            assert!(
                recorded_command(Path::new("/tmp"), bad, "true").is_err(),
                "{bad:?}"
            );
        }
        for good in ["a", "lt-smoke-1.every_1s", "...", "A-Z_0.9"] {
            assert!(
                recorded_command(Path::new("/tmp"), good, "true").is_ok(),
                "{good}"
            );
        }
    }
}
