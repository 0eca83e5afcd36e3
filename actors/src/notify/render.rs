//! What a message says: the mail's subject and text, and the webhook's JSON, for one notice
//! or a digest of several about one job. Pure functions of the notices.

use chrono::{DateTime, SecondsFormat};
use dron_model::notice::{Notice, NoticeKind};
use serde_json::{Value, json};

/// Notices listed one by one in a digest; the rest are counted.
const DIGEST_LISTED: usize = 50;

/// A message ready for any channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// `failed`, `timed_out`, ..., or `digest` for several notices.
    pub event: String,
    pub subject: String,
    pub text: String,
    pub json: Value,
}

/// Renders one notice, or a digest of several (oldest first, all about one job).
/// `ui_url` is where links point (no trailing slash needed).
pub fn render(notices: &[&Notice], ui_url: &str, window_secs: i64) -> Rendered {
    let ui_url = ui_url.trim_end_matches('/');
    let (subject, text, event) = match notices {
        [one] => (
            subject_of(one),
            single_text(one, ui_url),
            one.kind.as_str().to_string(),
        ),
        many => (
            digest_subject(many),
            digest_text(many, ui_url, window_secs),
            "digest".to_string(),
        ),
    };
    let listed: Vec<Value> = notices.iter().map(|n| notice_json(n, ui_url)).collect();
    let job = notices.first().map(|n| n.job.clone()).unwrap_or_default();
    let json = json!({
        "event": event,
        "job": job,
        "text": subject,
        "digest": notices.len() > 1,
        "count": notices.len(),
        "notices": listed,
    });
    Rendered {
        event,
        subject,
        text,
        json,
    }
}

pub fn time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// What happened, in words.
fn what(notice: &Notice) -> String {
    match notice.kind {
        NoticeKind::Failed => match notice.attempt + 1 {
            1 => "failed".to_string(),
            n => format!("failed for good after {n} attempts"),
        },
        NoticeKind::TimedOut => "timed out (ran past maxCompletionTime)".to_string(),
        NoticeKind::Expired => "expired waiting for its resources".to_string(),
        NoticeKind::Skipped if notice.count > 1 => {
            format!("{} targets skipped", notice.count)
        }
        NoticeKind::Skipped => "target skipped".to_string(),
        NoticeKind::Recovered => "recovered: succeeded after failures".to_string(),
        NoticeKind::Test => "test notification".to_string(),
    }
}

fn subject_of(notice: &Notice) -> String {
    match notice.kind {
        NoticeKind::Test => "[dron] test notification".to_string(),
        _ => format!(
            "[dron] job '{}' {} (target {})",
            notice.job,
            what(notice),
            time(notice.target_ms)
        ),
    }
}

fn digest_subject(notices: &[&Notice]) -> String {
    let job = &notices[0].job;
    let mut counts: Vec<(NoticeKind, usize)> = Vec::new();
    for notice in notices {
        match counts.iter_mut().find(|(kind, _)| *kind == notice.kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((notice.kind, 1)),
        }
    }
    let counted: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{} {n}", kind.as_str()))
        .collect();
    format!(
        "[dron] job '{job}': {} notices ({})",
        notices.len(),
        counted.join(", ")
    )
}

fn runs_url(ui_url: &str, job: &str) -> String {
    format!("{ui_url}/api/jobs/{job}/runs")
}

/// The job's page in the web UI: its runs, their logs, what it waits for.
fn job_page_url(ui_url: &str, job: &str) -> String {
    format!("{ui_url}/ui/#/job/{job}")
}

fn stderr_url(ui_url: &str, notice: &Notice) -> Option<String> {
    let task = notice.task_id.as_ref()?;
    Some(format!(
        "{ui_url}/api/jobs/{}/runs/{task}/stderr",
        notice.job
    ))
}

/// The facts of one notice, one per line.
fn facts(notice: &Notice, ui_url: &str) -> String {
    let mut lines = vec![
        format!("Job:       {}", notice.job),
        format!("Target:    {}", time(notice.target_ms)),
        format!("What:      {}", what(notice)),
        format!("When:      {}", time(notice.at_ms)),
    ];
    if let Some(code) = notice.exit_code {
        lines.push(format!("Exit code: {code}"));
    }
    if let Some(task) = &notice.task_id {
        lines.push(format!(
            "Task:      {task} (attempt {})",
            notice.attempt + 1
        ));
    }
    if !notice.message.is_empty() {
        lines.push(format!("Message:   {}", notice.message));
    }
    if notice.kind != NoticeKind::Test {
        lines.push(format!("Job page:  {}", job_page_url(ui_url, &notice.job)));
        lines.push(format!("Runs:      {}", runs_url(ui_url, &notice.job)));
    }
    if let Some(url) = stderr_url(ui_url, notice) {
        lines.push(format!("Stderr:    {url}"));
    }
    lines.join("\n")
}

fn stderr_block(notice: &Notice) -> String {
    if notice.stderr_tail.is_empty() {
        return String::new();
    }
    let indented: Vec<String> = notice
        .stderr_tail
        .lines()
        .map(|line| format!("  {line}"))
        .collect();
    format!("\n\nLast lines of stderr:\n{}", indented.join("\n"))
}

fn single_text(notice: &Notice, ui_url: &str) -> String {
    let intro = match notice.kind {
        NoticeKind::Test => {
            "This is a test notification from dron: this channel works.".to_string()
        }
        _ => format!("dron: job '{}' {}.", notice.job, what(notice)),
    };
    format!(
        "{intro}\n\n{}{}\n",
        facts(notice, ui_url),
        stderr_block(notice)
    )
}

fn digest_text(notices: &[&Notice], ui_url: &str, window_secs: i64) -> String {
    let job = &notices[0].job;
    let mut text = format!(
        "dron: {} notices about job '{job}', gathered into one message \
         (flood control: at most one message per job every {window_secs} s).\n\n\
         Job page: {}\n\n",
        notices.len(),
        job_page_url(ui_url, job),
    );
    for notice in notices.iter().take(DIGEST_LISTED) {
        text.push_str(&digest_line(notice));
    }
    if notices.len() > DIGEST_LISTED {
        let more = notices.len() - DIGEST_LISTED;
        text.push_str(&format!("... and {more} more (see the runs page).\n"));
    }
    if let Some(newest) = notices.iter().rev().find(|n| !n.stderr_tail.is_empty()) {
        let task = newest.task_id.as_deref().unwrap_or("-");
        text.push_str(&format!(
            "\nThe newest stderr (target {}, task {task}):{}\n",
            time(newest.target_ms),
            &stderr_block(newest)["\n\nLast lines of stderr:".len()..]
        ));
    }
    text
}

/// One notice of a digest: `- <target>  <what>  exit <code>  <message>`.
fn digest_line(notice: &Notice) -> String {
    let exit = notice
        .exit_code
        .map(|code| format!("  exit {code}"))
        .unwrap_or_default();
    let message = match notice.message.is_empty() {
        true => String::new(),
        false => format!("  {}", notice.message),
    };
    format!(
        "- {}  {}{exit}{message}\n",
        time(notice.target_ms),
        what(notice)
    )
}

fn notice_json(notice: &Notice, ui_url: &str) -> Value {
    json!({
        "id": notice.key(),
        "event": notice.kind.as_str(),
        "job": notice.job,
        "owner": notice.owner,
        "target": time(notice.target_ms),
        "at": time(notice.at_ms),
        "attempt": notice.attempt,
        "taskId": notice.task_id,
        "exitCode": notice.exit_code,
        "message": notice.message,
        "count": notice.count,
        "stderrTail": notice.stderr_tail,
        "runsUrl": runs_url(ui_url, &notice.job),
        "jobUrl": job_page_url(ui_url, &notice.job),
        "stderrUrl": stderr_url(ui_url, notice),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(target_ms: i64) -> Notice {
        Notice {
            job: "export".into(),
            kind: NoticeKind::Failed,
            target_ms,
            at_ms: target_ms + 5,
            owner: "ops@example.com".into(),
            webhooks: vec![],
            attempt: 2,
            task_id: Some(format!("ct:{target_ms}:2:export:")),
            exit_code: Some(3),
            message: "exited with code 3".into(),
            count: 1,
            stderr_tail: "line one\nboom".into(),
        }
    }

    #[test]
    fn one_failure_names_job_target_exit_code_stderr_and_link() {
        let notice = failure(1_795_000_000_000);
        let rendered = render(&[&notice], "http://dron.example:4400/", 300);
        assert_eq!(rendered.event, "failed");
        assert!(
            rendered.subject.contains("'export' failed"),
            "{}",
            rendered.subject
        );
        for needle in [
            "Job:       export",
            "Target:    2026-11-18T",
            "Exit code: 3",
            "attempt 3",
            "  boom",
            "http://dron.example:4400/api/jobs/export/runs/ct:1795000000000:2:export:/stderr",
        ] {
            assert!(
                rendered.text.contains(needle),
                "{needle}\n{}",
                rendered.text
            );
        }
        assert_eq!(rendered.json["notices"][0]["exitCode"], 3);
        assert_eq!(rendered.json["digest"], false);
    }

    #[test]
    fn a_digest_counts_and_lists_its_notices() {
        let notices: Vec<Notice> = (0..60).map(|i| failure(i * 1000)).collect();
        let refs: Vec<&Notice> = notices.iter().collect();
        let rendered = render(&refs, "http://u", 300);
        assert_eq!(rendered.event, "digest");
        assert!(
            rendered.subject.contains("60 notices (failed 60)"),
            "{}",
            rendered.subject
        );
        assert!(rendered.text.contains("and 10 more"), "{}", rendered.text);
        let line = "- 1970-01-01T00:00:01.000Z  failed for good after 3 attempts  exit 3  exited with code 3";
        assert!(rendered.text.contains(line), "{}", rendered.text);
        assert!(
            rendered
                .text
                .contains("task ct:59000:2:export:):\n  line one\n  boom"),
            "{}",
            rendered.text
        );
        assert_eq!(rendered.json["count"], 60);
        assert_eq!(rendered.json["notices"].as_array().unwrap().len(), 60);
    }
}
