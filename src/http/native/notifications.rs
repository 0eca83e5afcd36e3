//! Failure notifications: the recent notices with how each delivery fared
//! (`GET /api/notifications`), and a test notice (`POST /api/notifications/test`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use dron_actors::notify::TestRequest;
use dron_model::error::Invalid;
use dron_model::notice::{Channel, DeliveryState, NoticeRecord, validate_webhook_url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::time;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::parse_json;

/// The most notices one answer lists.
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
}

/// The newest notices (default 50), newest first.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, e.body_text());
        error.field = Some("limit");
        error
    })?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let records = state.client()?.notifications(limit).await?;
    let listed: Vec<Value> = records.iter().map(record_json).collect();
    Ok(Json(json!({ "notifications": listed })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    email: Option<String>,
    webhook: Option<String>,
}

/// Sends a test notice through every configured channel, or to the given address or URL;
/// answers once each channel has been tried, with how it went.
pub async fn test(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body: TestBody = match body.iter().all(u8::is_ascii_whitespace) {
        true => TestBody::default(),
        false => parse_json(&body).map_err(|mut error| {
            error.field.get_or_insert("body");
            error
        })?,
    };
    if let Some(email) = &body.email {
        validate_address(email)?;
    }
    if let Some(url) = &body.webhook {
        validate_webhook_url("webhook", url)?;
        state.check_webhook("webhook", url)?;
    }
    let request = TestRequest {
        email: body.email,
        webhook: body.webhook,
    };
    let record = state.client()?.test_notification(request).await?;
    let delivered = record
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Sent);
    let mut answer = record_json(&record);
    answer["delivered"] = Value::from(delivered);
    Ok(Json(answer))
}

/// An address for a test mail: one `local@domain`, nothing that could smuggle a header.
fn validate_address(email: &str) -> Result<(), Invalid> {
    let shape_ok = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    let clean = !email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',');
    if shape_ok && clean && email.len() <= 254 {
        return Ok(());
    }
    Err(Invalid::new(
        "email",
        "give one mail address, e.g. \"ops@example.com\"",
    ))
}

pub fn record_json(record: &NoticeRecord) -> Value {
    let notice = &record.notice;
    let deliveries: Vec<Value> = record
        .deliveries
        .iter()
        .map(|delivery| {
            let url = match &delivery.channel {
                Channel::Webhook(url) => Some(url.clone()),
                Channel::Email => None,
            };
            let to = match delivery.channel {
                Channel::Email => notice.recipients(),
                Channel::Webhook(_) => Vec::new(),
            };
            json!({
                "channel": delivery.channel.kind(),
                "url": url,
                "to": to,
                "state": delivery.state.as_str(),
                "attempts": delivery.attempts,
                "lastError": delivery.last_error,
                "sent": time(delivery.sent_ms),
                // 1: sent alone; more: in a digest of that many notices.
                "sentWith": delivery.sent_with,
            })
        })
        .collect();
    json!({
        "id": notice.key(),
        "event": notice.kind.as_str(),
        "job": notice.job,
        "owner": notice.owner,
        "target": time(Some(notice.target_ms)),
        "at": time(Some(notice.at_ms)),
        "attempt": notice.attempt,
        "taskId": notice.task_id,
        "exitCode": notice.exit_code,
        "message": notice.message,
        "count": notice.count,
        "stderrTail": notice.stderr_tail,
        "deliveries": deliveries,
    })
}
