//! Failure notifications end to end: the real binary, a real SMTP server (aiosmtpd, started
//! on a loopback port), a real HTTP receiver, and a real kill -9.

mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::notify::{Receiver, SmtpSink};
use support::{Server, free_port, wait_for};

/// A schedule that never fires by itself: runs are started on request.
const SOMEDAY: &str = "R/2099-01-01T00:00:00Z/P1D";

fn smtp_config(port: u16, window_secs: u64) -> String {
    format!(
        "[notify]\ndigest_window_secs = {window_secs}\nui_url = \"http://dron.test\"\n\
         retry_backoff_ms = 200\nretry_backoff_max_ms = 1000\n\
         [notify.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"dron <dron@example.com>\"\n"
    )
}

async fn notifications(server: &Server) -> Vec<Value> {
    let answer = server
        .ok("GET", "/api/notifications?limit=1000", None)
        .await;
    answer["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The job's notices, once none of their deliveries is queued any more.
async fn settled_notices(server: &Server, job: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = notifications(server).await;
        let mine: Vec<Value> = all.into_iter().filter(|n| n["job"] == job).collect();
        let queued = mine.iter().any(|n| {
            let deliveries = n["deliveries"].as_array().cloned().unwrap_or_default();
            deliveries.iter().any(|d| d["state"] == "queued")
        });
        if !mine.is_empty() && !queued {
            return mine;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the notices of {job} to be delivered: {mine:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_job_mails_its_owner_once_retries_are_exhausted() {
    let smtp = SmtpSink::start(free_port()).await;
    let server = Server::start_with_config(2, &smtp_config(smtp.port, 300)).await;
    server
        .create(json!({
            "name": "nightly-export", "schedule": SOMEDAY, "retries": 1,
            "owner": "alice@example.com, bob@example.com",
            "command": "echo 'reading table users' >&2; echo 'ERROR: disk full' >&2; exit 3",
        }))
        .await;
    server
        .ok("PUT", "/scheduler/job/nightly-export", None)
        .await;
    server.wait_for_run("nightly-export", "failed").await;
    let notices = settled_notices(&server, "nightly-export").await;
    assert_eq!(notices.len(), 1, "one notice, after the retry: {notices:?}");
    let notice = &notices[0];
    assert_eq!(notice["event"], "failed");
    assert_eq!(notice["attempt"], 1, "the retry was the last attempt");
    assert_eq!(notice["deliveries"][0]["state"], "sent", "{notice}");

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:?}");
    let mail = &mails[0];
    let mut recipients: Vec<&str> = mail["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    recipients.sort();
    assert_eq!(recipients, ["alice@example.com", "bob@example.com"]);
    assert!(mail["from"].as_str().unwrap().contains("dron@example.com"));
    let subject = mail["subject"].as_str().unwrap();
    assert!(
        subject.contains("nightly-export") && subject.contains("failed"),
        "{subject}"
    );
    let body = mail["body"].as_str().unwrap();
    let task_id = notice["taskId"].as_str().unwrap();
    let target = notice["target"].as_str().unwrap();
    for needle in [
        "Job:       nightly-export",
        &format!("Target:    {target}"),
        "Exit code: 3",
        "reading table users",
        "ERROR: disk full",
        &format!("http://dron.test/api/jobs/nightly-export/runs/{task_id}/stderr"),
    ] {
        assert!(body.contains(needle), "the mail says {needle:?}:\n{body}");
    }

    // The CLI shows it.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(["notifications", "list", "--url", &server.url("")])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{listed}");
    assert!(
        listed.contains("nightly-export") && listed.contains("email sent"),
        "{listed}"
    );
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn a_webhook_is_retried_after_a_500_and_delivered_once_signed() {
    let hook = Receiver::start(1).await;
    let job_hook = Receiver::start(0).await;
    let config = format!(
        "[notify]\nretry_backoff_ms = 200\n\
         [[notify.webhooks]]\nurl = \"{}\"\nevents = [\"failed\"]\nsecret = \"s3cret\"\n",
        hook.url
    );
    let server = Server::start_with_config(1, &config).await;
    server
        .create(json!({
            "name": "flaky", "schedule": SOMEDAY, "retries": 0,
            "command": "echo 'no route to db' >&2; exit 7",
            "notifyWebhooks": [job_hook.url],
        }))
        .await;
    server.ok("PUT", "/scheduler/job/flaky", None).await;
    let notices = settled_notices(&server, "flaky").await;
    let hits = hook.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 200],
        "retried once after the 500"
    );
    assert_eq!(hits[0].body, hits[1].body, "the same message both times");
    assert_eq!(
        hits[0].header("x-dron-delivery"),
        hits[1].header("x-dron-delivery")
    );
    let body = hits[1].json();
    assert_eq!(body["event"], "failed");
    assert_eq!(body["job"], "flaky");
    assert_eq!(body["notices"][0]["exitCode"], 7);
    assert_eq!(body["notices"][0]["stderrTail"], "no route to db");
    assert_eq!(
        hits[1].header("x-dron-signature"),
        Some(signature("s3cret", &hits[1].body)),
        "signed with the configured secret"
    );
    let delivery = notices[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["url"] == hook.url.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (delivery["state"].as_str(), delivery["attempts"].as_u64()),
        (Some("sent"), Some(2))
    );
    assert!(
        delivery["lastError"].as_str().unwrap().contains("500"),
        "{delivery}"
    );
    // The job's own webhook got it too, unsigned (no job_webhook_secret).
    let job_hits = job_hook.hits();
    assert_eq!(job_hits.len(), 1);
    assert_eq!(job_hits[0].header("x-dron-signature"), None);
    // Delivered: never sent again, however long we wait past the retry delay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.hits().len(), 2);

    // A test notice through a given URL, and refusals naming their field.
    let (status, answer) = server
        .request(
            "POST",
            "/api/notifications/test",
            Some(json!({"webhook": job_hook.url})),
        )
        .await;
    assert_eq!(
        (status, &answer["delivered"]),
        (200, &json!(true)),
        "{answer}"
    );
    assert_eq!(job_hook.hits().last().unwrap().json()["event"], "test");
    for (body, field) in [
        (json!({"webhook": "nope"}), "webhook"),
        (json!({"email": "ops@example.com"}), "email"),
        (json!({"email": "not an address"}), "email"),
        (json!({"bogus": 1}), "body"),
    ] {
        let (status, answer) = server
            .request("POST", "/api/notifications/test", Some(body.clone()))
            .await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{body}: {answer}"
        );
    }
}

#[tokio::test]
async fn queued_notices_survive_a_kill_9_and_are_delivered_after_restart() {
    // The SMTP server is down when the job fails: the mail waits in the queue.
    let port = free_port();
    let mut server = Server::start_with_config(1, &smtp_config(port, 300)).await;
    server
        .create(json!({
            "name": "doomed", "schedule": SOMEDAY, "retries": 0,
            "owner": "oncall@example.com", "command": "exit 9",
        }))
        .await;
    server.ok("PUT", "/scheduler/job/doomed", None).await;
    wait_for(
        "a failed delivery attempt",
        Duration::from_secs(30),
        || async {
            let all = notifications(&server).await;
            all.iter().any(|n| {
                n["job"] == "doomed"
                    && n["deliveries"][0]["state"] == "queued"
                    && n["deliveries"][0]["attempts"].as_u64() >= Some(1)
            })
        },
    )
    .await;
    server.kill9();
    let smtp = SmtpSink::start(port).await;
    server.restart().await;
    wait_for(
        "the mail after the restart",
        Duration::from_secs(30),
        || async { !smtp.mails().is_empty() },
    )
    .await;
    let notices = settled_notices(&server, "doomed").await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["deliveries"][0]["state"], "sent");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["rcpt_tos"], json!(["oncall@example.com"]));
    assert!(mails[0]["body"].as_str().unwrap().contains("Exit code: 9"));
}

#[tokio::test]
async fn a_flood_of_failures_is_bounded_by_digests() {
    let smtp = SmtpSink::start(free_port()).await;
    let server = Server::start_with_config(2, &smtp_config(smtp.port, 1)).await;
    server
        .create(json!({
            "name": "hammer", "schedule": "R//PT0.2S", "retries": 0,
            "owner": "team@example.com", "command": "exit 1",
        }))
        .await;
    wait_for("a flood of failures", Duration::from_secs(30), || async {
        let runs = server.runs("hammer").await;
        runs.iter().filter(|r| r["state"] == "failed").count() >= 12
    })
    .await;
    let (status, _) = server
        .request("DELETE", "/scheduler/job/hammer", None)
        .await;
    assert_eq!(status, 204);
    let notices = settled_notices(&server, "hammer").await;
    let failures = notices.iter().filter(|n| n["event"] == "failed").count();
    assert!(failures >= 12, "{failures} failures noticed");
    for notice in &notices {
        assert_eq!(notice["deliveries"][0]["state"], "sent", "{notice}");
    }
    let mails = smtp.mails();
    // One mail at once, then one digest per 1 s window while the flood lasted.
    assert!(
        mails.len() >= 2 && mails.len() <= 8,
        "{} mails for {failures} failures",
        mails.len()
    );
    let told: usize = mails
        .iter()
        .map(|mail| {
            let subject = mail["subject"].as_str().unwrap();
            let counted = subject.split(": ").nth(1).and_then(|rest| {
                let (n, _) = rest.split_once(" notices")?;
                n.parse::<usize>().ok()
            });
            counted.unwrap_or(1)
        })
        .sum();
    assert_eq!(told, notices.len(), "every notice told exactly once");
    assert!(
        mails
            .iter()
            .any(|m| m["subject"].as_str().unwrap().contains(" notices (")),
        "a digest was sent"
    );
}
