//! The HTTP client the remote subcommands share, and how their failures become exit codes.

use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

/// Where the server is: `--url`, accepted before or after the subcommand.
#[derive(Args)]
pub struct Remote {
    /// The dron server's URL.
    #[arg(
        long,
        env = "DRON_URL",
        default_value = "http://127.0.0.1:4400",
        global = true
    )]
    pub url: String,
    /// A bearer token, for a server whose config has `[auth] tokens`.
    #[arg(long, env = "DRON_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The CA certificate(s), PEM, that signed an https:// server's certificate; trusted
    /// instead of the system's CAs.
    #[arg(long, env = "DRON_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why a command failed: printed as `error: <message>`, answered as the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// Bad input on this side (a job file, a name): exit 1, nothing sent.
    pub fn local(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

pub type Outcome = Result<(), Failure>;

/// Prints a failure on stderr; answers the exit code.
pub fn finish(outcome: Outcome) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    pub fn new(remote: &Remote) -> Result<Client, Failure> {
        let ca = crate::tls::TrustedCa::load_optional(remote.ca_file.as_deref())
            .map_err(|error| Failure::local(format!("--ca-file: {error:#}")))?;
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        let http = crate::tls::with_ca(builder, ca.as_ref())
            .build()
            .map_err(|error| Failure::local(format!("--ca-file: {}", chain(&error))))?;
        Ok(Client {
            http,
            url: remote.url.trim_end_matches('/').to_string(),
            token: remote.token.clone(),
        })
    }

    /// Sends one request; answers the JSON body (`Null` when empty, a string when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let body = parse_body(&text);
        if status.is_success() {
            Ok(body)
        } else {
            Err(server_error(status, &body))
        }
    }

    /// Sends one GET; answers the raw body and headers of a success.
    pub async fn get_raw(
        &self,
        path: &str,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), Failure> {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            Ok((headers, bytes.to_vec()))
        } else {
            let body = parse_body(&String::from_utf8_lossy(&bytes));
            Err(server_error(status, &body))
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        let causes = chain(error);
        let hint = crate::tls::failure_hint(&causes)
            .map(|hint| format!(" ({hint})"))
            .unwrap_or_default();
        Failure {
            code: 2,
            message: format!(
                "cannot reach the dron server at {}: {causes}{hint}",
                self.url
            ),
        }
    }
}

fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The server's `{"error", "field"}` as `<field>: <error>`.
fn server_error(status: reqwest::StatusCode, body: &Value) -> Failure {
    let message = match (&body["error"], body) {
        (Value::String(error), _) => error.clone(),
        (_, Value::String(text)) => format!("{status}: {}", text.trim()),
        _ => format!("the server answered {status}"),
    };
    let message = match body["field"].as_str() {
        Some(field) => format!("{field}: {message}"),
        None => message,
    };
    Failure { code: 1, message }
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A job name as one URL path segment. `.`, `..` and the empty name cannot be one (URLs
/// resolve them away), so they are refused here.
pub fn job_segment(name: &str) -> Result<String, Failure> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Failure::local(format!("name: '{name}' is not a job name")));
    }
    let mut segment = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            segment.push(byte as char);
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(segment)
}
