//! Roles of the API's credentials, and which one each call needs: a token or basic user may
//! read, operate jobs (run, kill, mark a run done), change them, or administer the server.
//! Each role allows what the ones before it do.

use axum::http::Method;
use serde::Deserialize;

/// What a credential may do (`[auth]` tokens and basic users; admin when not said).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// GETs: jobs, runs, output, graphs, metrics, the UI.
    Read,
    /// Runs: start one now, kill a job's tasks, mark a run done or a job's run succeeded;
    /// backfill a job, rerun a run, cancel a backfill.
    Operate,
    /// Jobs: create, change (enable and disable too: a job's `disabled` field), delete;
    /// publish resources.
    Write,
    /// The server: shards, cluster membership, agents' credentials, the notifications
    /// test, garbage collection, backups. What every credential could do before roles.
    #[default]
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// The role a call needs. A call not listed needs admin: a new endpoint is closed to
    /// the lesser roles until it is placed here.
    pub fn needed(method: &Method, path: &str) -> Role {
        // Chronos 3 clients use the same routes under /v1.
        let path = match path.starts_with("/v1/") {
            true => &path["/v1".len()..],
            false => path,
        };
        let reading = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if reading {
            // The names of the agents' credentials are the administrator's.
            return match path.starts_with("/api/agent-tokens") {
                true => Role::Admin,
                false => Role::Read,
            };
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("PUT", ["scheduler", "job", _])
            | ("PUT", ["scheduler", "job", "success", _])
            | ("PUT", ["scheduler", "task", _])
            | ("DELETE", ["scheduler", "task", "kill", _])
            | ("POST", ["api", "jobs", _, "backfill"])
            | ("POST", ["api", "jobs", _, "runs", _, "rerun"])
            | ("DELETE", ["api", "backfills", _]) => Role::Operate,
            ("POST" | "PUT", ["scheduler", "iso8601" | "dependency"])
            | ("DELETE", ["scheduler", "job", _])
            | ("POST", ["resources"])
            | ("POST", ["api", "resources"]) => Role::Write,
            _ => Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_needs_the_least_role_that_does_it() {
        let cases = [
            (Method::GET, "/scheduler/jobs", Role::Read),
            (Method::GET, "/v1/scheduler/job/a", Role::Read),
            (Method::GET, "/api/shards", Role::Read),
            (Method::GET, "/metrics", Role::Read),
            (Method::GET, "/api/agent-tokens", Role::Admin),
            (Method::PUT, "/scheduler/job/a", Role::Operate),
            (Method::PUT, "/v1/scheduler/job/a", Role::Operate),
            (Method::PUT, "/scheduler/job/success/a", Role::Operate),
            (Method::POST, "/api/jobs/a/backfill", Role::Operate),
            (
                Method::POST,
                "/api/jobs/a/runs/2026-11-01T00:00:00Z/rerun",
                Role::Operate,
            ),
            (Method::DELETE, "/api/backfills/bf-1", Role::Operate),
            (Method::GET, "/api/backfills", Role::Read),
            (Method::PUT, "/scheduler/task/a_1_2", Role::Operate),
            (Method::DELETE, "/scheduler/task/kill/a", Role::Operate),
            (Method::POST, "/scheduler/iso8601", Role::Write),
            (Method::PUT, "/v1/scheduler/dependency", Role::Write),
            (Method::DELETE, "/scheduler/job/a", Role::Write),
            (Method::POST, "/resources", Role::Write),
            (Method::POST, "/api/resources", Role::Write),
            (Method::PUT, "/api/shards", Role::Admin),
            (Method::POST, "/api/cluster/nodes", Role::Admin),
            (Method::POST, "/api/notifications/test", Role::Admin),
            (Method::POST, "/api/agent-tokens", Role::Admin),
            (Method::DELETE, "/api/agent-tokens/w", Role::Admin),
            (Method::POST, "/api/gc", Role::Admin),
            (Method::POST, "/api/backup", Role::Admin),
            (Method::POST, "/api/something-new", Role::Admin),
            (Method::PUT, "/scheduler/job/a/extra", Role::Admin),
        ];
        for (method, path, role) in cases {
            assert_eq!(Role::needed(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn roles_are_ordered_and_admin_is_the_default() {
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Write);
        assert!(Role::Write < Role::Admin);
        assert_eq!(Role::default(), Role::Admin);
    }
}
