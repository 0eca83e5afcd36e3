//! Refuses changes asked by other web sites. The API reads JSON bodies whatever their
//! `Content-Type` (Chronos clients send all kinds), so without this a page an operator visits
//! could post a job, a command to run, to a dron their browser reaches, with the browser's
//! cached credentials. Browsers say where a request comes from in `Sec-Fetch-Site`; the UI's
//! own requests are `same-origin` (behind a proxy too, since the browser computes it), and
//! clients that are not browsers do not send it.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// What a browser says of a request it was asked for by another site.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

pub async fn refuse_cross_site_writes(request: Request, next: Next) -> Response {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    let site = request.headers().get(SEC_FETCH_SITE);
    let from_elsewhere = site.is_some_and(|s| s != "same-origin" && s != "none");
    if reads.contains(request.method()) || !from_elsewhere {
        return next.run(request).await;
    }
    let message =
        "a change asked by another web site is refused (Sec-Fetch-Site is not same-origin)";
    ApiError::new(StatusCode::FORBIDDEN, message).into_response()
}
