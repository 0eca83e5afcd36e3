//! A small WebDriver client over the reqwest the tests already use: chromedriver speaks JSON
//! over HTTP, and the few commands the UI tests need fit here. (A WebDriver crate would change
//! the features of crates shared with the RocksDB build and recompile its C++: 45 minutes.)

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The key under which WebDriver answers an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver (in its own process group, with the chromium it starts) and one session.
pub struct WebDriver {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver: Child,
}

impl WebDriver {
    /// Starts `chromedriver` and a headless session of `chromium` in a window of that size.
    pub async fn start(chromedriver: &str, chromium: &str, size: (u32, u32)) -> WebDriver {
        let port = super::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so that Drop ends chromium with it.
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        super::wait_for("chromedriver", Duration::from_secs(30), || {
            let ready = http.get(format!("{base}/status")).send();
            async move { matches!(ready.await, Ok(r) if r.status() == 200) }
        })
        .await;
        let window = format!("--window-size={},{}", size.0, size.1);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--hide-scrollbars", window],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let Some(id) = answer["value"]["sessionId"].as_str() else {
            panic!("chromedriver started no session: {answer}");
        };
        let session = format!("{base}/session/{id}");
        WebDriver {
            http,
            session,
            driver,
        }
    }

    /// One command; answers its `value`, or the driver's error message.
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        match ok {
            true => Ok(answer["value"].clone()),
            false => Err(format!(
                "{}: {}",
                answer["value"]["error"], answer["value"]["message"]
            )),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await
            .unwrap();
    }

    pub async fn refresh(&self) {
        self.command("POST", "/refresh", Some(json!({})))
            .await
            .unwrap();
    }

    pub async fn current_url(&self) -> String {
        let url = self.command("GET", "/url", None).await.unwrap();
        url.as_str().unwrap_or_default().to_string()
    }

    /// Runs a script's body (`return ...` answers a value).
    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        let body = json!({ "script": script, "args": [] });
        self.command("POST", "/execute/sync", Some(body)).await
    }

    /// The first element matching a CSS selector, if there is one now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let body = json!({ "using": "css selector", "value": css });
        let found = self.command("POST", "/element", Some(body)).await.ok()?;
        found[ELEMENT].as_str().map(str::to_string)
    }

    pub async fn click(&self, element: &str) -> Result<(), String> {
        let path = format!("/element/{element}/click");
        self.command("POST", &path, Some(json!({}))).await.map(drop)
    }

    /// Types into an element as a user would (key events, so input listeners run).
    pub async fn send_keys(&self, element: &str, text: &str) -> Result<(), String> {
        let path = format!("/element/{element}/value");
        let body = json!({ "text": text });
        self.command("POST", &path, Some(body)).await.map(drop)
    }

    pub async fn clear(&self, element: &str) -> Result<(), String> {
        let path = format!("/element/{element}/clear");
        self.command("POST", &path, Some(json!({}))).await.map(drop)
    }

    /// The viewport as PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None).await.unwrap();
        decode_base64(encoded.as_str().unwrap_or_default())
    }

    /// Ends the session (chromium quits); chromedriver goes with Drop.
    pub async fn close(&self) {
        let _ = self.command("DELETE", "", None).await;
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group chromedriver leads; no memory involved.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// Standard base64 (screenshots come as such), padding and line breaks ignored.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut bytes = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, s)| acc | (u32::from(*s) << (18 - 6 * i)));
        let whole = chunk.len() * 6 / 8;
        bytes.extend(bits.to_be_bytes()[1..=whole].iter());
    }
    bytes
}
