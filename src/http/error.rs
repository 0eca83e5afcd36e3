//! Every client error is a 4xx with a JSON body `{"error": "...", "field": "..."}`; a 5xx is
//! a server-side problem, never an answer to input.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dron_actors::error::CommandError;
use dron_model::error::Invalid;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: invalid.message,
            field: Some(invalid.field),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        let status = match &error {
            CommandError::Invalid(invalid) => return invalid.clone().into(),
            CommandError::JobNotFound(_)
            | CommandError::TaskNotFound(_)
            | CommandError::BackfillNotFound(_) => StatusCode::NOT_FOUND,
            CommandError::Conflict(_) => StatusCode::CONFLICT,
            CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CommandError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "error": self.message, "field": field }),
            None => json!({ "error": self.message }),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is a passing state (a shard restarting or overloaded, recovery
            // under way): clients may retry after a second.
            let retry = axum::http::HeaderValue::from_static("1");
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
