//! A JSON body extractor whose every rejection is a JSON error naming the problem (axum's
//! own answers some of them in plain text), and that names the field a type error is in.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest accepted request body; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    ApiError::new(
                        status,
                        format!("could not read the request body: {rejection}"),
                    )
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("request body is not valid JSON for this endpoint: {inner}")
        } else {
            format!("field '{path}': {inner}")
        };
        let mut api_error = ApiError::new(StatusCode::BAD_REQUEST, message);
        api_error.field = field_name(&path);
        api_error
    })?;
    deserializer.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("trailing data after the JSON body: {e}"),
        )
    })?;
    Ok(value)
}

/// The top-level field of a serde path, as a static name when it is one of the job fields.
fn field_name(path: &str) -> Option<&'static str> {
    let top = path.split(['.', '[']).next()?;
    let others = ["statusCode", "email", "webhook", "dryRun", "dir"];
    let known = dron_model::job::JOB_FIELDS.iter().chain(&others);
    known.copied().find(|field| *field == top)
}
