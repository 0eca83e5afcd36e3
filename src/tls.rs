//! TLS, through the system's OpenSSL (native-tls), the stack dron already links for webhooks
//! and SMTP (docs/security.md says why not rustls): the server's certificate and key
//! ([`ServerTls`]), and the CA its clients verify it with ([`TrustedCa`]): agents, the CLI,
//! and the cluster's servers talking to each other.

use std::path::Path;

use anyhow::Context;

/// The server's side: its certificate chain and private key, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_native_tls::TlsAcceptor,
}

impl ServerTls {
    /// Reads the certificate chain (PEM, the server's first, then its intermediates) and the
    /// private key (PEM, PKCS#8: `-----BEGIN PRIVATE KEY-----`).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ServerTls> {
        let cert_pem = std::fs::read(cert)
            .with_context(|| format!("tls: reading the certificate {}", cert.display()))?;
        let key_pem = std::fs::read(key)
            .with_context(|| format!("tls: reading the private key {}", key.display()))?;
        anyhow::ensure!(
            !pem_blocks(&cert_pem, "CERTIFICATE").is_empty(),
            "tls: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        );
        let key_pem = pkcs8_block(&key_pem).with_context(|| {
            format!(
                "tls: {} holds no PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----); convert \
                 it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pkcs8`",
                key.display()
            )
        })?;
        let identity = native_tls::Identity::from_pkcs8(&cert_pem, key_pem).with_context(|| {
            format!(
                "tls: the certificate {} and the key {} do not make an identity",
                cert.display(),
                key.display()
            )
        })?;
        let acceptor = native_tls::TlsAcceptor::builder(identity)
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()
            .context("tls: setting up the server's TLS")?;
        Ok(ServerTls {
            acceptor: acceptor.into(),
        })
    }

    pub fn acceptor(&self) -> &tokio_native_tls::TlsAcceptor {
        &self.acceptor
    }
}

/// The CA certificates a client trusts, instead of the system's: the CA that signed the
/// servers' certificates (`--ca-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCa {
    /// Each certificate's PEM block.
    certificates: Vec<Vec<u8>>,
}

impl TrustedCa {
    /// Reads a PEM file of one or more CA certificates.
    pub fn load(path: &Path) -> anyhow::Result<TrustedCa> {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        let certificates: Vec<Vec<u8>> = pem_blocks(&pem, "CERTIFICATE")
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        anyhow::ensure!(
            !certificates.is_empty(),
            "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
        for certificate in &certificates {
            native_tls::Certificate::from_pem(certificate)
                .with_context(|| format!("the CA file {}: a bad certificate", path.display()))?;
        }
        Ok(TrustedCa { certificates })
    }

    /// Reads `path` if given.
    pub fn load_optional(path: Option<&Path>) -> anyhow::Result<Option<TrustedCa>> {
        path.map(TrustedCa::load).transpose()
    }

    /// `builder` trusting these certificates only.
    pub fn reqwest(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let certificates = self
            .certificates
            .iter()
            .filter_map(|pem| reqwest::Certificate::from_pem(pem).ok());
        builder.tls_certs_only(certificates)
    }

    /// A connector for WebSockets (`wss://`) trusting these certificates only.
    pub fn connector(&self) -> anyhow::Result<native_tls::TlsConnector> {
        let mut builder = native_tls::TlsConnector::builder();
        builder.disable_built_in_roots(true);
        builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        for pem in &self.certificates {
            builder.add_root_certificate(native_tls::Certificate::from_pem(pem)?);
        }
        Ok(builder.build()?)
    }
}

/// `builder` trusting `ca` when given (else the system's CAs).
pub fn with_ca(builder: reqwest::ClientBuilder, ca: Option<&TrustedCa>) -> reqwest::ClientBuilder {
    match ca {
        Some(ca) => ca.reqwest(builder),
        None => builder,
    }
}

/// A hint for a TLS failure's message (OpenSSL's words), if it is one.
pub fn failure_hint(message: &str) -> Option<&'static str> {
    if message.contains("certificate verify failed") {
        return Some(
            "the server's certificate was not accepted: give the CA that signed it with \
             --ca-file (DRON_CA_FILE for the CLI), and reach the server by a name or address \
             its certificate lists",
        );
    }
    if message.contains("wrong version number") || message.contains("packet length too long") {
        return Some("the server does not speak TLS here: use http:// (ws://)");
    }
    None
}

/// The PEM blocks of `label` (`-----BEGIN {label}-----` to its END line) in `pem`.
fn pem_blocks<'a>(pem: &'a [u8], label: &str) -> Vec<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, begin.as_bytes()) {
        let Some(length) = find(&rest[start..], end.as_bytes()) else {
            break;
        };
        let stop = start + length + end.len();
        blocks.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    blocks
}

/// The key's PKCS#8 block (what native-tls takes), whatever precedes it in the file.
fn pkcs8_block(pem: &[u8]) -> Option<&[u8]> {
    pem_blocks(pem, "PRIVATE KEY").into_iter().next()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_whatever_surrounds_them() {
        let pem = b"Bag Attributes\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    junk\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let blocks = pem_blocks(pem, "CERTIFICATE");
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].starts_with(b"-----BEGIN CERTIFICATE-----\nAAA"));
        assert!(blocks[1].ends_with(b"BBB\n-----END CERTIFICATE-----"));
        assert!(pem_blocks(b"-----BEGIN CERTIFICATE-----\nno end", "CERTIFICATE").is_empty());
    }

    #[test]
    fn only_pkcs8_keys_are_taken() {
        let rsa = b"-----BEGIN RSA PRIVATE KEY-----\nA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(pkcs8_block(rsa), None);
        let pkcs8 = b"x\n-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            pkcs8_block(pkcs8),
            Some(&b"-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----"[..])
        );
    }

    #[test]
    fn tls_failures_get_a_hint() {
        let failed = "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed";
        assert!(failure_hint(failed).unwrap().contains("--ca-file"));
        assert!(failure_hint("connection refused").is_none());
    }
}
