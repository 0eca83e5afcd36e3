//! The web UI: static files compiled into the binary from `src/ui/assets/` and served under
//! `/ui/`. The pages are plain ES modules that read the public API, so nothing is built and
//! no other service runs; `/` redirects to `/ui/`.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;

/// A UI file: as written, and compressed at build time (build.rs).
struct Asset {
    path: &'static str,
    body: &'static [u8],
    gzip: &'static [u8],
    brotli: &'static [u8],
}

/// Every file under `src/ui/assets/`, by its path there (a test checks none is missing), with
/// its gzip and brotli forms from `$OUT_DIR/ui/`.
macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ui/assets/", $path)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/ui/", $path, ".gz")),
            brotli: include_bytes!(concat!(env!("OUT_DIR"), "/ui/", $path, ".br")),
        }),*]
    };
}

const ASSETS: &[Asset] = assets![
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
    "backfills.js",
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

/// How a response's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    /// The best encoding the request accepts (`Accept-Encoding`, q=0 meaning "not this"):
    /// brotli, then gzip, else none.
    fn accepted(headers: &HeaderMap) -> Encoding {
        let accepted = |name: &str| {
            headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .any(|item| {
                    let mut parts = item.split(';').map(str::trim);
                    let coding = parts.next().unwrap_or("");
                    let refused = parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q <= 0.0)
                    });
                    coding.eq_ignore_ascii_case(name) && !refused
                })
        };
        if accepted("br") {
            Encoding::Brotli
        } else if accepted("gzip") {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }
}

impl Asset {
    /// The body to send for `encoding`: the compressed form unless it is no smaller.
    fn encoded(&self, encoding: Encoding) -> (Encoding, &'static [u8]) {
        let compressed = match encoding {
            Encoding::Brotli => self.brotli,
            Encoding::Gzip => self.gzip,
            Encoding::Identity => return (Encoding::Identity, self.body),
        };
        if compressed.len() < self.body.len() {
            (encoding, compressed)
        } else {
            (Encoding::Identity, self.body)
        }
    }
}

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

/// The asset, compressed as the request accepts, with an ETag of its content and encoding.
/// Vendored libraries carry their version in their names, so browsers keep them a year without
/// asking; the UI's own files are revalidated each load (`no-cache`) and answered 304 without
/// a body while the binary is the same, and with the new files after an upgrade.
fn serve(path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        return Err(ApiError::not_found(format!("no UI file {path}")));
    };
    let (encoding, body) = asset.encoded(Encoding::accepted(headers));
    let suffix = match encoding {
        Encoding::Brotli => "-br",
        Encoding::Gzip => "-gz",
        Encoding::Identity => "",
    };
    let etag = format!(
        "\"{:016x}{suffix}\"",
        xxhash_rust::xxh3::xxh3_64(asset.body)
    );
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let lifetime = if path.starts_with("vendor/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static(lifetime)),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
    ];
    let revalidated = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if revalidated {
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
    let mut response = (
        cache,
        protection,
        [(header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response();
    let coding = match encoding {
        Encoding::Brotli => Some("br"),
        Encoding::Gzip => Some("gzip"),
        Encoding::Identity => None,
    };
    if let Some(coding) = coding {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    Ok(response)
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
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    fn request(accept_encoding: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = accept_encoding {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    /// The body of a response, decoded as its Content-Encoding says.
    async fn decoded(response: Response) -> Vec<u8> {
        use std::io::Read;
        let coding = response.headers().get(header::CONTENT_ENCODING).cloned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut plain = Vec::new();
        match coding.as_ref().and_then(|c| c.to_str().ok()) {
            Some("br") => {
                brotli::Decompressor::new(&body[..], 4096)
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            Some("gzip") => {
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            None => plain = body.to_vec(),
            Some(other) => panic!("unexpected encoding {other}"),
        }
        plain
    }

    #[test]
    fn the_best_accepted_encoding_is_chosen() {
        let accepted = |value| Encoding::accepted(&request(value));
        assert_eq!(accepted(Some("gzip, deflate, br, zstd")), Encoding::Brotli);
        assert_eq!(accepted(Some("gzip")), Encoding::Gzip);
        assert_eq!(accepted(Some("br;q=0, gzip;q=0.5")), Encoding::Gzip);
        assert_eq!(accepted(Some("identity")), Encoding::Identity);
        assert_eq!(accepted(None), Encoding::Identity);
    }

    /// Every file, in every encoding, decodes to the file itself; the large ones shrink.
    #[tokio::test]
    async fn compressed_files_decode_to_the_originals() {
        for asset in ASSETS {
            for (accept, coding) in [("br", "br"), ("gzip", "gzip"), ("identity", "")] {
                let response = serve(asset.path, &request(Some(accept))).unwrap();
                assert_eq!(response.headers()[header::VARY], "accept-encoding");
                let sent = response.headers().get(header::CONTENT_ENCODING).cloned();
                if asset.body.len() > 4096 {
                    assert_eq!(sent.as_ref().map_or("", |c| c.to_str().unwrap()), coding);
                }
                assert_eq!(
                    decoded(response).await,
                    asset.body,
                    "{} as {accept}",
                    asset.path
                );
            }
        }
        let cytoscape = "vendor/cytoscape-3.34.4.esm.min.mjs";
        let brotli = serve(cytoscape, &request(Some("br"))).unwrap();
        let length = axum::body::to_bytes(brotli.into_body(), usize::MAX)
            .await
            .unwrap()
            .len();
        assert!(length < 434_248 / 3, "{length} bytes of brotli");
    }

    /// Each encoding has its own ETag, and revalidating with it answers 304 without a body.
    #[tokio::test]
    async fn revalidation_matches_the_encoding_sent() {
        let etag_of = |accept| {
            let response = serve("app.js", &request(Some(accept))).unwrap();
            response.headers()[header::ETAG].clone()
        };
        let (brotli, plain) = (etag_of("br"), etag_of("identity"));
        assert_ne!(brotli, plain);
        let mut headers = request(Some("br"));
        headers.insert(header::IF_NONE_MATCH, brotli);
        let response = serve("app.js", &headers).unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let mut headers = request(Some("br"));
        headers.insert(header::IF_NONE_MATCH, plain);
        assert_eq!(serve("app.js", &headers).unwrap().status(), StatusCode::OK);
        let vendor = serve("vendor/uPlot-1.6.32.min.css", &request(None)).unwrap();
        assert!(
            vendor.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let own = serve("app.js", &request(None)).unwrap();
        assert_eq!(own.headers()[header::CACHE_CONTROL], "no-cache");
    }

    #[test]
    fn scripts_are_served_as_javascript() {
        assert!(content_type("vendor/x.min.mjs").starts_with("text/javascript"));
        assert!(content_type("app.js").starts_with("text/javascript"));
        assert!(content_type("index.html").starts_with("text/html"));
    }
}
