//! `dron logs NAME`: the captured stdout (or stderr) of a job's newest run, or of one task.

use std::io::Write;

use reqwest::Method;
use reqwest::header::HeaderMap;

use super::client::{Client, Failure, Outcome, job_segment};

pub async fn logs(
    client: &Client,
    name: &str,
    task: Option<String>,
    stderr: bool,
    follow: bool,
) -> Outcome {
    let segment = job_segment(name)?;
    let task = match task {
        Some(task) => task,
        None => newest_task(client, name, &segment).await?,
    };
    let stream = if stderr { "stderr" } else { "stdout" };
    let base = format!("/api/jobs/{segment}/runs/{}/{stream}", job_segment(&task)?);
    let mut offset: u64 = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let mut path = format!("{base}?offset={offset}");
        if follow {
            path.push_str("&follow=true");
        }
        let (headers, bytes) = client.get_raw(&path).await?;
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Failure::local(format!("cannot write the output: {e}")))?;
        let finished = header(&headers, "x-dron-run-finished").as_deref() == Some("true");
        let next = header(&headers, "x-dron-next-offset")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(offset + bytes.len() as u64);
        if finished || (!follow && (bytes.is_empty() || next == offset)) {
            return Ok(());
        }
        offset = next;
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
}

/// The task id of the job's newest run (skipped ranges have none).
async fn newest_task(client: &Client, name: &str, segment: &str) -> Result<String, Failure> {
    let path = format!("/api/jobs/{segment}/runs?limit=100");
    let answer = client.call(Method::GET, &path, None).await?;
    answer["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|run| run["kind"] != "skipped")
        .find_map(|run| run["taskId"].as_str().map(str::to_string))
        .ok_or_else(|| Failure::local(format!("job '{name}' has no runs yet")))
}
