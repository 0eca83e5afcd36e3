//! `dron shards show|set`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::{Client, Outcome};
use super::table::pretty;

#[derive(Subcommand)]
pub enum ShardsAction {
    /// Print the shards and their load.
    Show,
    /// Change the shard count online; only jobs whose owner changes move.
    Set { count: u32 },
}

pub async fn shards(client: &Client, action: ShardsAction) -> Outcome {
    let answer = match action {
        ShardsAction::Show => client.call(Method::GET, "/api/shards", None).await?,
        ShardsAction::Set { count } => {
            let body = json!({ "count": count });
            client.call(Method::PUT, "/api/shards", Some(&body)).await?
        }
    };
    println!("{}", pretty(&answer));
    Ok(())
}
