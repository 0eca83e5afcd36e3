//! The web UI: static files compiled into the binary from `src/ui/assets/` and served under
//! `/ui/`. The pages are plain ES modules that read the public API, so nothing is built and
//! no other service runs; `/` redirects to `/ui/`.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;

/// Every file under `src/ui/assets/`, by its path there (a test checks none is missing).
macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ui/assets/", $path)))),*]
    };
}

const ASSETS: &[(&str, &[u8])] = assets![
    "index.html",
    "app.css",
    "app.js",
    "route.js",
    "api.js",
    "dom.js",
    "format.js",
    "jobs.js",
    "job.js",
    "form.js",
    "graph.js",
    "cluster.js",
    "favicon.svg",
    "vendor/README.md",
    "vendor/cytoscape-3.34.4.esm.min.mjs",
    "vendor/cytoscape.LICENSE",
    "vendor/cytoscape-dagre-4.0.1.min.mjs",
    "vendor/cytoscape-dagre.LICENSE",
    "vendor/dagre.LICENSE",
    "vendor/uPlot-1.6.32.iife.min.js",
    "vendor/uPlot-1.6.32.min.css",
    "vendor/uPlot.LICENSE",
    "vendor/cronstrue-3.39.0.min.js",
    "vendor/cronstrue.LICENSE",
];

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(to_ui))
        .route("/ui", get(to_ui))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn to_ui() -> Redirect {
    Redirect::temporary("/ui/")
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(IntoResponse::into_response)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers).unwrap_or_else(IntoResponse::into_response)
}

/// The asset with an ETag of its content: browsers revalidate each load (`no-cache`) and get
/// a 304 without a body while the binary is the same, and the new files after an upgrade.
fn serve(path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some((_, body)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return Err(ApiError::not_found(format!("no UI file {path}")));
    };
    let etag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let content_type = HeaderValue::from_static(content_type(path));
    let protection = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    let headers = [(header::CONTENT_TYPE, content_type)];
    Ok((cache, protection, headers, *body).into_response())
}

/// The UI runs only its own files: no inline or foreign script, no framing (clickjacking),
/// requests to this server only. Inline styles stay allowed: the chart libraries set them.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit('.').next().unwrap_or("");
    match extension {
        "html" => "text/html; charset=utf-8",
        // Module scripts must be served as JavaScript, `.mjs` included.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in the assets folder, relative to it.
    fn files_under(dir: &std::path::Path, prefix: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.path().is_dir() {
                found.extend(files_under(&entry.path(), &format!("{name}/")));
            } else {
                found.push(name);
            }
        }
        found
    }

    #[test]
    fn every_asset_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui/assets");
        let mut on_disk = files_under(&dir, "");
        let mut embedded: Vec<String> = ASSETS.iter().map(|(p, _)| p.to_string()).collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn scripts_are_served_as_javascript() {
        assert!(content_type("vendor/x.min.mjs").starts_with("text/javascript"));
        assert!(content_type("app.js").starts_with("text/javascript"));
        assert!(content_type("index.html").starts_with("text/html"));
    }
}
