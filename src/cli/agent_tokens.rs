//! `dron agent-token create|revoke|list`: remote agents' credentials, made and kept by the
//! server (`/api/agent-tokens`).

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::{Client, Failure, Outcome};
use super::table::pretty;

#[derive(Subcommand)]
pub enum AgentTokenAction {
    /// Make a credential for agent NAME and print it (the server keeps only its hash: it is
    /// shown this once). Give it to the agent with `dron agent --token-file`.
    Create {
        name: String,
        /// Write the credential to this file (created readable by its owner only) instead
        /// of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke agent NAME's credential; its connection, if any, is closed.
    Revoke { name: String },
    /// List the agents that have a credential.
    List,
}

pub async fn agent_token(client: &Client, action: AgentTokenAction) -> Outcome {
    match action {
        AgentTokenAction::Create { name, out } => {
            let body = json!({ "name": name });
            let answer = client
                .call(Method::POST, "/api/agent-tokens", Some(&body))
                .await?;
            let token = answer["token"].as_str().unwrap_or_default();
            match out {
                None => println!("{token}"),
                Some(path) => {
                    write_private(&path, token).map_err(|error| {
                        Failure::local(format!("writing {}: {error}", path.display()))
                    })?;
                    println!("agent '{name}': credential written to {}", path.display());
                }
            }
        }
        AgentTokenAction::Revoke { name } => {
            let path = format!("/api/agent-tokens/{name}");
            client.call(Method::DELETE, &path, None).await?;
            println!("agent '{name}': credential revoked");
        }
        AgentTokenAction::List => {
            let answer = client.call(Method::GET, "/api/agent-tokens", None).await?;
            println!("{}", pretty(&answer));
        }
    }
    Ok(())
}

/// Writes `text` to a new file that only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")
}
