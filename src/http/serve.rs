//! Serving the router over HTTP/1, as `axum::serve` does, with a timeout on reading each
//! request's headers: axum's gives hyper no timer, so a client that opens connections and
//! never finishes a request's headers would hold each (and its task) for ever.
//!
//! With TLS (`--tls-cert`, `--tls-key`), each connection's handshake runs in its own task,
//! within the same timeout, before HTTP is served over it; without, connections are served
//! as they are accepted, as before.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::tls::ServerTls;

/// How long a client may take to send a request's headers, from the connection's start or
/// the end of its previous request (and, over TLS, to complete its handshake).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then lets the connections finish
/// their requests (upgraded ones, agents' WebSockets, end on their own).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Connections watch `stopping`; each holds a clone of `open` until it ends.
    let (stop, stopping) = watch::channel(false);
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, mostly: wait rather than spin.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            peer,
            stopping: stopping.clone(),
            open: open.clone(),
        };
        match &tls {
            None => connection.spawn(TokioIo::new(stream)),
            Some(tls) => {
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Some(stream) = handshake(&tls, stream, peer).await {
                        connection.spawn(TokioIo::new(stream));
                    }
                });
            }
        }
    }
    let _ = stop.send(true);
    drop(open);
    let _ = all_closed.recv().await;
    Ok(())
}

/// One accepted connection, to be served.
struct Connection {
    builder: http1::Builder,
    app: axum::Router,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
    /// Held until the connection ends.
    open: mpsc::Sender<()>,
}

impl Connection {
    fn spawn<IO>(self, io: IO)
    where
        IO: Read + Write + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            app,
            peer,
            mut stopping,
            open,
        } = self;
        // Each request knows its client's address (`ConnectInfo`, as `axum::serve` gives it):
        // the failed-login limit counts by address.
        let router = TowerToHyperService::new(app);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.call(request)
        });
        let connection = builder.serve_connection(io, service).with_upgrades();
        tokio::spawn(async move {
            tokio::pin!(connection);
            // The only change is to stopping.
            let stopped = tokio::select! {
                _ = connection.as_mut() => false,
                changed = stopping.changed() => changed.is_ok(),
            };
            if stopped {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            drop(open);
        });
    }
}

/// The first byte of a TLS handshake record: anything else is a client speaking plain HTTP
/// to the TLS port.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A plain-HTTP client at the TLS port is told so in plain HTTP (it could not read a TLS
/// alert), rather than seeing its connection close without a word.
const PLAIN_HTTP_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 55\r\n\r\n{\"error\":\"this server speaks HTTPS only: use https://\"}";

/// Answers [`PLAIN_HTTP_REFUSED`], then reads what the client sent until it closes (for a
/// second at most): closing with its request unread would reset the connection, and the
/// client could lose the answer.
async fn refuse_plain_http(mut stream: TcpStream) {
    if stream.write_all(PLAIN_HTTP_REFUSED).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
}

/// Completes the TLS handshake within [`HEADER_READ_TIMEOUT`]; None when it failed (logged
/// at debug: a client that does not trust the certificate ends it, and says why itself).
async fn handshake(
    tls: &ServerTls,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_native_tls::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            refuse_plain_http(stream).await;
            return None;
        }
        _ => return None,
    }
    match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "a TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "a TLS handshake did not finish within {HEADER_READ_TIMEOUT:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_http_refusal_is_well_formed() {
        let text = std::str::from_utf8(super::PLAIN_HTTP_REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("https://"));
    }
}
