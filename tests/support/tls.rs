//! Certificates for TLS tests, made with the `openssl` command: a CA, a server certificate it
//! signs for 127.0.0.1 and localhost, and a second CA that signed nothing of the server's.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let at = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, subject) in [("ca", "/CN=dron test CA"), ("other-ca", "/CN=unrelated CA")] {
            openssl(
                at,
                &["req", "-x509"],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    subject,
                ],
            );
        }
        openssl(
            at,
            &["req"],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            at.join("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(
            at,
            &["x509", "-req"],
            &[],
            &[
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// The `[tls]` section of a server serving the certificate, trusting the CA for its peers.
    pub fn server_toml(&self) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.ca()
        )
    }
}

fn openssl(dir: &Path, command: &[&str], key: &[&str], rest: &[&str]) {
    let output = Command::new("openssl")
        .args(command)
        .args(key)
        .args(rest)
        .current_dir(dir)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An HTTP client trusting only the CA at `ca`.
pub fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let certificate = reqwest::Certificate::from_pem(&pem).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([certificate])
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}
