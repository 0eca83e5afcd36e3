//! The web UI end to end: Debian's chromium, headless, driven through chromedriver (WebDriver)
//! against the real server. A job is created in the form, runs, its log is read (followed live
//! while it runs), it shows in the graph, and one job is found among 10,000. Each page is
//! saved as a screenshot under `target/ui-screenshots/` for review.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;
use support::agents::Agent;
use support::webdriver::WebDriver;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a condition in the page may take; generous for a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(30);
const BULK_JOBS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_creates_runs_tails_graphs_and_searches_jobs() {
    let server = Server::start(4).await;
    let browser = Browser::start(&server).await;

    // The jobs page and its search, among 10,000 jobs.
    create_many(&server, BULK_JOBS).await;
    search_among_many(&browser).await;

    // A job made in the form runs; its log is read; a bad field is named beside it.
    form_refuses_bad_input(&browser).await;
    create_in_form_and_read_its_log(&browser).await;
    follow_a_running_log(&browser, &server).await;

    // The graph shows the job and what runs after it.
    server
        .create(json!({"name": "ui-after", "command": "echo after", "parents": ["ui-hello"]}))
        .await;
    graph_shows_the_neighbourhood(&browser).await;

    edit_in_form(&browser, &server).await;
    waiting_and_daylight_saving(&browser, &server).await;
    failing_filter_and_sort(&browser, &server).await;
    agents_and_shards(&browser, &server).await;
    backfill_from_the_job_page(&browser, &server).await;
    disable_and_delete(&browser, &server).await;
    browser.close().await;
}

/// Creates `count` jobs far in the future, 32 requests at a time: names `etl-NNNNN`, owners
/// `team-K@example.com` (ten teams), and one `needle-report` to find.
async fn create_many(server: &Server, count: usize) {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let (http, url) = (server.http.clone(), server.url("/scheduler/iso8601"));
        workers.spawn(async move {
            for i in (worker..count).step_by(32) {
                let name = match i {
                    7321 => "needle-report".to_string(),
                    _ => format!("etl-{i:05}"),
                };
                let job = json!({
                    "name": name, "command": format!("echo {i}"), "owner": format!("team-{}@example.com", i % 10),
                    "schedule": "R/2099-01-01T00:00:00Z/P1D",
                });
                let response = http.post(&url).json(&job).send().await.unwrap();
                assert_eq!(response.status(), 204, "creating {name}");
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    eprintln!("created {count} jobs in {:?}", started.elapsed());
}

async fn search_among_many(b: &Browser) {
    b.open("#/jobs").await;
    b.wait_js(
        "the jobs table with its total",
        "return document.querySelector('#jobs-total')?.textContent.includes('of 10,000 jobs')",
    )
    .await;
    b.screenshot("jobs").await;
    b.type_into("#job-search", "needle").await;
    b.wait_js(
        "one match for 'needle'",
        "const rows = document.querySelectorAll('table.jobs tbody tr[data-job]');
         return rows.length === 1 && rows[0].dataset.job === 'needle-report'
             && document.querySelector('#jobs-total').textContent.includes('of 1 jobs')",
    )
    .await;
    b.screenshot("jobs-search").await;
    b.clear("#job-search").await;
    b.type_into("#job-search", "team-3@").await;
    b.wait_js(
        "a thousand matches for team-3",
        "return document.querySelector('#jobs-total').textContent === '1–50 of 1,000 jobs'",
    )
    .await;
    b.click("#next-page").await;
    b.wait_js(
        "the second page",
        "return document.querySelector('#jobs-total').textContent === '51–100 of 1,000 jobs'",
    )
    .await;
    assert!(
        b.url().await.contains("q=team-3%40"),
        "the search is in the URL"
    );
}

async fn form_refuses_bad_input(b: &Browser) {
    b.open("#/new").await;
    b.type_into("#f-name", "ui-bad").await;
    b.type_into("#f-command", "true").await;
    b.clear("#f-epsilon").await;
    b.type_into("#f-epsilon", "soon").await;
    b.click("#save-job").await;
    b.wait_js(
        "the server's error beside the epsilon field",
        "return document.querySelector('.field-error[data-for=epsilon]').textContent.includes('soon')
             && document.querySelector('#f-epsilon').classList.contains('invalid')",
    )
    .await;
    b.screenshot("new-job-error").await;
    assert!(b.url().await.ends_with("#/new"), "still on the form");
}

async fn create_in_form_and_read_its_log(b: &Browser) {
    b.open("#/new").await;
    b.type_into("#f-name", "ui-hello").await;
    b.type_into("#f-command", "echo hello from the form").await;
    // The default schedule, R//PT1H, fires its first target at once.
    b.type_into("#f-owner", "ui@example.com").await;
    b.click("#save-job").await;
    b.wait_js(
        "the job's page",
        "return location.hash === '#/job/ui-hello'",
    )
    .await;
    b.wait_js(
        "a succeeded run in the runs table",
        "return !!document.querySelector('#runs tr[data-state=succeeded] a.log-link')",
    )
    .await;
    b.click("#runs tr[data-state=succeeded] a.log-link").await;
    b.wait_js(
        "the run's output, finished",
        "return document.querySelector('#log')?.textContent.includes('hello from the form')
             && document.querySelector('#log-status').textContent.startsWith('finished')",
    )
    .await;
    b.wait_js(
        "the next fire times",
        "return document.querySelectorAll('#next-targets li').length === 10",
    )
    .await;
    b.screenshot("job").await;
}

/// A run that prints, waits for a file, then prints again: its log shows the first line while
/// it runs, and the second once the test lets it finish.
async fn follow_a_running_log(b: &Browser, server: &Server) {
    let gate = server.scratch().join("go");
    let command = format!(
        "echo first line; while [ ! -e {} ]; do sleep 0.1; done; echo second line",
        gate.display()
    );
    server
        .create(json!({"name": "ui-tail", "command": command, "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .await;
    b.open("#/job/ui-tail").await;
    b.click("#run-now").await;
    b.wait_js(
        "a running run",
        "return !!document.querySelector('#runs tr[data-state=running] a.log-link')",
    )
    .await;
    b.click("#runs tr[data-state=running] a.log-link").await;
    b.wait_js(
        "the first line, live",
        "return document.querySelector('#log')?.textContent.includes('first line')
             && document.querySelector('#log-status').textContent.includes('live')",
    )
    .await;
    b.screenshot("job-live-log").await;
    std::fs::write(&gate, "").unwrap();
    b.wait_js(
        "the second line, and the run finished",
        "const log = document.querySelector('#log').textContent;
         return log.includes('first line\\n') && log.includes('second line')
             && document.querySelector('#log-status').textContent.startsWith('finished')",
    )
    .await;
}

async fn graph_shows_the_neighbourhood(b: &Browser) {
    b.open("#/graph?job=ui-hello").await;
    b.wait_js(
        "ui-hello and ui-after drawn, joined by an edge",
        "const cy = window.dronGraph;
         return !!cy && cy.getElementById('j:ui-hello').length === 1
             && cy.getElementById('j:ui-after').length === 1
             && cy.edges('[source = \"j:ui-hello\"][target = \"j:ui-after\"]').length === 1",
    )
    .await;
    let status = b
        .js("return window.dronGraph.getElementById('j:ui-hello').data('status')")
        .await;
    assert_eq!(status, "success", "ui-hello is coloured by its last result");
    b.screenshot("graph").await;
}

/// A job's page says what its instance still waits for, and marks a daylight-saving change
/// among its next fire times.
async fn waiting_and_daylight_saving(b: &Browser, server: &Server) {
    server
        .create(
            json!({"name": "ui-waits", "command": "true", "schedule": "R//PT1H",
                       "dependsOn": ["hive:ui/ds={TODAY}"]}),
        )
        .await;
    b.open("#/job/ui-waits").await;
    b.wait_js(
        "the resource it waits for",
        "const card = document.querySelector('#waiting');
         return !!card && !card.hidden && card.textContent.includes('hive:ui/ds=')",
    )
    .await;
    b.screenshot("job-waiting").await;
    // Berlin springs forward on 2027-03-28: the third target's offset changes.
    server
        .create(
            json!({"name": "ui-dst", "command": "true", "schedule": "R/2027-03-26T02:30:00/P1D",
                       "scheduleTimeZone": "Europe/Berlin"}),
        )
        .await;
    b.open("#/job/ui-dst").await;
    b.wait_js(
        "the daylight-saving change marked",
        "const marked = document.querySelectorAll('#next-targets li .badge-dst');
         return marked.length === 1 && marked[0].textContent.includes('+02:00')
             && document.querySelectorAll('#next-targets li')[2].contains(marked[0])",
    )
    .await;
}

/// The form shows the job as it is; a changed field is saved and the rest kept.
async fn edit_in_form(b: &Browser, server: &Server) {
    b.open("#/job/ui-hello").await;
    b.click("#edit").await;
    b.wait_js(
        "the form with the job's command",
        "return document.querySelector('#f-command')?.value === 'echo hello from the form'
             && document.querySelector('#f-name').readOnly",
    )
    .await;
    b.clear("#f-owner").await;
    b.type_into("#f-owner", "owners@example.com").await;
    b.click("#save-job").await;
    b.wait_js(
        "the job's page again",
        "return location.hash === '#/job/ui-hello'",
    )
    .await;
    let job = server.job("ui-hello").await;
    assert_eq!(job["owner"], "owners@example.com");
    assert_eq!(job["command"], "echo hello from the form");
    assert_eq!(
        job["schedule"].as_str().unwrap().split('/').nth(2),
        Some("PT1H")
    );
}

async fn failing_filter_and_sort(b: &Browser, server: &Server) {
    server
        .create(json!({"name": "ui-broken", "command": "exit 3", "retries": 0, "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .await;
    server.ok("PUT", "/scheduler/job/ui-broken", None).await;
    server.wait_for_run("ui-broken", "failed").await;
    b.open("#/jobs").await;
    b.click("[data-filter=failing]").await;
    b.wait_js(
        "only the failing job",
        "const rows = document.querySelectorAll('table.jobs tbody tr[data-job]');
         return rows.length === 1 && rows[0].dataset.job === 'ui-broken'",
    )
    .await;
    b.screenshot("jobs-failing").await;
    b.click("[data-filter='']").await;
    b.click("th[data-sort=lastSuccess]").await;
    b.wait_js(
        "the newest success first",
        "const first = document.querySelector('table.jobs tbody tr[data-job]');
         return location.hash.includes('sort=lastSuccess') && first && first.dataset.job.startsWith('ui-')",
    )
    .await;
}

async fn agents_and_shards(b: &Browser, server: &Server) {
    // A real remote agent beside the server's own.
    let _worker = Agent::start(server, "ui-worker", 4.0, 8192.0, "rack=r1").await;
    b.open("#/cluster").await;
    b.wait_js(
        "four shards, the server's agent and the remote one",
        "const rows = [...document.querySelectorAll('#agents tbody tr')].map(r => r.textContent);
         return document.querySelectorAll('#shards tbody tr').length === 4
             && rows.some(r => r.includes('local') && r.includes('in the server'))
             && rows.some(r => r.includes('ui-worker') && r.includes('rack=r1')
                 && r.includes('active') && r.includes('/ 4'))",
    )
    .await;
    b.screenshot("agents-and-shards").await;
}

/// The job page's Backfill dialog (its default range: the last seven days) starts one, and
/// the backfills page shows it to its end.
async fn backfill_from_the_job_page(b: &Browser, server: &Server) {
    let daily = json!({"name": "ui-daily", "command": "true",
                       "schedule": "R/2026-01-01T00:00:00Z/P1D", "cpus": 0.1, "mem": 16});
    server.create(daily).await;
    b.open("#/job/ui-daily").await;
    b.click("#backfill").await;
    b.wait_js(
        "the backfill dialog",
        "return !!document.querySelector('dialog[open] #backfill-start')",
    )
    .await;
    b.screenshot("backfill-dialog").await;
    b.click("#backfill-start").await;
    b.wait_js(
        "the backfill finished on the backfills page",
        "const row = document.querySelector('#backfills [data-backfill]');
         return location.hash === '#/backfills' && row !== null
             && row.textContent.includes('ui-daily') && row.textContent.includes('finished')",
    )
    .await;
    b.screenshot("backfills").await;
    let runs = server.runs("ui-daily").await;
    assert_eq!(runs.len(), 7, "a run for each of the last seven days");
}

async fn disable_and_delete(b: &Browser, server: &Server) {
    b.open("#/job/ui-tail").await;
    b.wait_js(
        "the Disable button",
        "return document.querySelector('#toggle-disabled')?.textContent === 'Disable'",
    )
    .await;
    b.click("#toggle-disabled").await;
    b.wait_js(
        "the job disabled",
        "return document.querySelector('#toggle-disabled')?.textContent === 'Enable'
             && document.querySelector('.page-head .badge-disabled') !== null",
    )
    .await;
    assert_eq!(server.job("ui-tail").await["disabled"], true);
    b.click("#delete").await;
    b.wait_js(
        "the confirmation",
        "return !!document.querySelector('dialog[open] #confirm-delete-yes')",
    )
    .await;
    b.screenshot("job-delete-confirm").await;
    b.click("#confirm-delete-yes").await;
    b.wait_js("the jobs page", "return location.hash === '#/jobs'")
        .await;
    let (status, _) = server.request("GET", "/scheduler/job/ui-tail", None).await;
    assert_eq!(status, 404, "the job is deleted");
}

/// A chromium session on the server's UI, with the waits and screenshots the steps use.
struct Browser {
    driver: WebDriver,
    base: String,
    screenshots: PathBuf,
}

impl Browser {
    async fn start(server: &Server) -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: apt-get install -y chromium chromium-driver (scripts/test.sh does)"
            );
        }
        let driver = WebDriver::start(CHROMEDRIVER, CHROMIUM, (1400, 900)).await;
        let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../ui-screenshots");
        std::fs::create_dir_all(&screenshots).unwrap();
        Browser {
            driver,
            base: server.url("/ui/"),
            screenshots,
        }
    }

    /// Shows a route afresh: going to the URL already shown would change nothing.
    async fn open(&self, route: &str) {
        let url = format!("{}{route}", self.base);
        if self.url().await == url {
            self.driver.refresh().await;
        } else {
            self.driver.goto(&url).await;
        }
        // The router renders a new hash in a task of its own: wait until it has.
        let rendered = format!(
            "return document.readyState === 'complete' && document.body.dataset.route === {route:?}"
        );
        self.wait_js(&format!("the page {route}"), &rendered).await;
    }

    async fn url(&self) -> String {
        self.driver.current_url().await
    }

    async fn js(&self, script: &str) -> Value {
        self.driver.execute(script).await.unwrap()
    }

    /// Polls a JavaScript condition until it is true; on time-out, saves a screenshot and
    /// fails naming what was awaited.
    async fn wait_js(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Value::Bool(true)) = self.driver.execute(condition).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.screenshot("failure").await;
        let body = self.js("return document.body.innerText").await;
        panic!("timed out waiting for {what}; the page shows:\n{body}");
    }

    /// The element, once the page shows it; then `act` on it, retried while the page
    /// re-renders it under the test (a stale element).
    async fn on_element<F, Fut>(&self, css: &str, act: F)
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::from("never found");
        while Instant::now() < deadline {
            if let Some(element) = self.driver.find(css).await {
                match act(element).await {
                    Ok(()) => return,
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not use {css}: {last}");
    }

    async fn click(&self, css: &str) {
        self.on_element(css, |e| async move { self.driver.click(&e).await })
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.on_element(
            css,
            |e| async move { self.driver.send_keys(&e, text).await },
        )
        .await;
    }

    async fn clear(&self, css: &str) {
        self.on_element(css, |e| async move { self.driver.clear(&e).await })
            .await;
        // Clearing fires no input event; the pages listen for input.
        let script = format!(
            "document.querySelector({css:?}).dispatchEvent(new Event('input', {{bubbles: true}})); return true"
        );
        self.js(&script).await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.driver.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.screenshots.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        self.driver.close().await;
    }
}
