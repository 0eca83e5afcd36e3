//! Receivers for notification tests: a real SMTP server (aiosmtpd, in Python, started on a
//! loopback port) and a real HTTP server recording webhook calls.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::wait_for;

/// The SMTP server: every mail it accepts, decoded, as JSON (see `smtp_sink.py`).
pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SmtpSink {
    /// Starts the sink on `port` and waits until it accepts connections.
    pub async fn start(port: u16) -> SmtpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 (the SMTP test server needs aiosmtpd: pip install aiosmtpd)");
        let sink = SmtpSink {
            port,
            dir,
            child: Some(child),
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for("the SMTP server (aiosmtpd)", Duration::from_secs(20), || async move {
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        })
        .await;
        sink
    }

    /// The mails received so far, in arrival order.
    pub fn mails(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|e| e == "json"));
        paths.sort();
        let read = paths.iter().filter_map(|p| std::fs::read_to_string(p).ok());
        read.filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request a webhook receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let value = self.headers.get(name)?;
        value.to_str().ok().map(str::to_string)
    }
}

/// An HTTP server on a loopback port recording every request; it answers 500 to the first
/// `fail_first` of them, then 200.
pub struct Receiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let failures_left = Arc::new(AtomicUsize::new(fail_first));
        let recorded = hits.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (hits, failures_left) = (recorded.clone(), failures_left.clone());
            async move {
                let fail = failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = match fail {
                    true => StatusCode::INTERNAL_SERVER_ERROR,
                    false => StatusCode::OK,
                };
                let hit = Hit {
                    headers,
                    body,
                    status: status.as_u16(),
                };
                hits.lock().unwrap().push(hit);
                status
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, hits }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}
