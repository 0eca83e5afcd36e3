//! openraft's network, client side: RPCs to a member's `/internal/raft/...` routes (served by
//! [`super::service`]) over HTTP, postcard bodies, the cluster secret as a bearer token.
//!
//! One `reqwest::Client` per member (its connection pool), built once and shared by every
//! connection openraft asks for (it asks for one per replication stream and per election).
//! Each request's deadline is openraft's `RPCOption::hard_ttl`. A member that cannot be
//! connected to, or whose Raft has stopped (503), is `Unreachable`, so that openraft backs off
//! instead of retrying at once; other failures are `Network` errors, retried at once.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::RPCTypes;
use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::election::{PreVoteRequest, PreVoteResponse};
use super::service::{APPEND_PATH, PREVOTE_PATH, SNAPSHOT_PATH, VOTE_PATH};
use super::types::{Member, TypeConfig};
use crate::cluster::view::NodeId;

/// Builds the client of each member, once.
pub struct Network {
    this: NodeId,
    secret: Arc<str>,
    connect_timeout: Duration,
    /// Verifies https:// members' certificates; None: the system's CAs.
    ca: Option<crate::tls::TrustedCa>,
    /// By member: the address its client was built for, and the client (or why it could not be
    /// built: openraft's `new_client` cannot fail, so each RPC reports it).
    clients: Mutex<HashMap<NodeId, (String, Built)>>,
    /// Whether this server's Raft waits for disk space: it then sends nothing (see `Peer::call`).
    space: Arc<super::space::Space>,
}

/// A member's client, or why it could not be built.
type Built = Result<reqwest::Client, String>;

impl Network {
    pub fn new(
        this: NodeId,
        secret: Arc<str>,
        connect_timeout: Duration,
        ca: Option<crate::tls::TrustedCa>,
        space: Arc<super::space::Space>,
    ) -> Network {
        Network {
            this,
            secret,
            connect_timeout,
            ca,
            clients: Mutex::new(HashMap::new()),
            space,
        }
    }

    /// The client for `target` at `address`, built on first use (or when its address changed).
    pub fn client(&self, target: NodeId, address: &str) -> Built {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((built_for, client)) = clients.get(&target)
            && built_for == address
        {
            return client.clone();
        }
        let builder = reqwest::Client::builder()
            // Raft traffic goes straight to the members, never through a proxy from the
            // environment.
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let client = crate::tls::with_ca(builder, self.ca.as_ref())
            .build()
            .map_err(|error| error.to_string());
        clients.insert(target, (address.to_string(), client.clone()));
        client
    }

    fn peer(&self, target: NodeId, member: &Member) -> Peer {
        Peer {
            this: self.this,
            target,
            member: member.clone(),
            client: self.client(target, &member.address),
            secret: self.secret.clone(),
            space: self.space.clone(),
        }
    }

    /// Asks `target` whether it would vote for this server ([`super::election`]), or why it
    /// gave no answer within `deadline`.
    pub async fn pre_vote(
        &self,
        target: NodeId,
        member: &Member,
        request: &PreVoteRequest,
        deadline: Duration,
    ) -> Result<PreVoteResponse, String> {
        let option = RPCOption::new(deadline);
        match self
            .peer(target, member)
            .call::<_, _, Infallible>(PREVOTE_PATH, request, &option)
            .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(never)) => match never {},
            Err(failure) => Err(failure.to_string()),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Arc<Network> {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, member: &Member) -> Peer {
        self.peer(target, member)
    }
}

/// A connection to one member, as openraft uses it.
pub struct Peer {
    this: NodeId,
    target: NodeId,
    member: Member,
    client: Built,
    secret: Arc<str>,
    space: Arc<super::space::Space>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

/// Why an RPC got no answer from the member's Raft.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no HTTP client for node {0}: {1}")]
    NoClient(NodeId, String),
    #[error("cannot encode the request to {0}: {1}")]
    Encode(&'static str, postcard::Error),
    #[error("cannot decode node {0}'s answer to {1}: {2}")]
    Decode(NodeId, &'static str, postcard::Error),
    #[error("node {0} ({1}) answered {2} to {3}: {4}")]
    Status(NodeId, String, StatusCode, &'static str, String),
    #[error("node {0} ({1}) cannot be reached: {2}")]
    Connect(NodeId, String, String),
    #[error("node {0} ({1}) did not answer {2} in time: {3}")]
    Timeout(NodeId, String, &'static str, String),
    #[error("the request to node {0} ({1}) failed: {2}")]
    Transport(NodeId, String, String),
    #[error("not sent to node {0}: this server's disk is full")]
    DiskFull(NodeId),
}

/// An error with its causes (reqwest's own message does not say why: "error sending request").
fn with_causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl Failure {
    /// As openraft wants it: which failures to back off from, which to retry at once.
    fn into_rpc_error<E: Error>(
        self,
        peer: &Peer,
        action: RPCTypes,
        option: &RPCOption,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        match self {
            // Refused, no route, no answer to the connection, or a stopped Raft (503): back
            // off as from a dead server.
            Failure::Connect(..) | Failure::DiskFull(_) => {
                RPCError::Unreachable(Unreachable::new(&self))
            }
            Failure::Status(_, _, StatusCode::SERVICE_UNAVAILABLE, _, _) => {
                RPCError::Unreachable(Unreachable::new(&self))
            }
            Failure::Timeout(..) => RPCError::Timeout(Timeout {
                action,
                id: peer.this,
                target: peer.target,
                timeout: option.hard_ttl(),
            }),
            _ => RPCError::Network(NetworkError::new(&self)),
        }
    }
}

impl Peer {
    /// POSTs `request` to `path` and decodes the member's answer: its Raft's response, or
    /// its refusal (`W`, see [`super::service`]).
    async fn call<Req, Resp, W>(
        &self,
        path: &'static str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, W>, Failure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        W: DeserializeOwned,
    {
        // A server whose disk is full sends nothing: as leader it would go on heartbeating
        // while it cannot apply (its log appends may still fit), and so keep a lead under
        // which nothing is scheduled; silent, the others elect a leader with room, whose
        // higher term deposes it. As a follower it asks for no votes until it has room.
        if self.space.is_full() {
            return Err(Failure::DiskFull(self.target));
        }
        let client = self
            .client
            .as_ref()
            .map_err(|error| Failure::NoClient(self.target, error.clone()))?;
        let body = postcard::to_stdvec(request).map_err(|error| Failure::Encode(path, error))?;
        let address = || self.member.address.clone();
        let transport = |error: reqwest::Error| {
            let text = with_causes(&error);
            if error.is_connect() {
                Failure::Connect(self.target, address(), text)
            } else if error.is_timeout() {
                Failure::Timeout(self.target, address(), path, text)
            } else {
                Failure::Transport(self.target, address(), text)
            }
        };
        let url = format!("{}{path}", self.member.address.trim_end_matches('/'));
        let response = client
            .post(url)
            .bearer_auth(&*self.secret)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            return Err(Failure::Status(self.target, address(), status, path, text));
        }
        let bytes = response.bytes().await.map_err(transport)?;
        postcard::from_bytes(&bytes).map_err(|error| Failure::Decode(self.target, path, error))
    }

    fn refused<E: Error>(&self, refusal: E) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.member.clone(),
            RaftError::APIError(refusal),
        ))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        let entries = rpc.entries.len() as u64;
        match self
            .call::<_, _, Infallible>(APPEND_PATH, &rpc, &option)
            .await
        {
            Ok(answer) => answer.map_err(|refusal| self.refused(refusal)),
            // The member's body limit refused it: openraft retries with fewer entries.
            Err(Failure::Status(_, _, StatusCode::PAYLOAD_TOO_LARGE, _, _)) if entries > 1 => Err(
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)),
            ),
            Err(failure) => Err(failure.into_rpc_error(self, RPCTypes::AppendEntries, &option)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(SNAPSHOT_PATH, &rpc, &option).await {
            Ok(answer) => answer.map_err(|refusal| self.refused(refusal)),
            Err(failure) => Err(failure.into_rpc_error(self, RPCTypes::InstallSnapshot, &option)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        match self
            .call::<_, _, Infallible>(VOTE_PATH, &rpc, &option)
            .await
        {
            Ok(answer) => answer.map_err(|refusal| self.refused(refusal)),
            Err(failure) => Err(failure.into_rpc_error(self, RPCTypes::Vote, &option)),
        }
    }
}
