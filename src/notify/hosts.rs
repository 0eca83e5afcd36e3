//! Where webhooks may go: the hosts of `[notify] webhook_hosts` (`hooks.example.com`,
//! `*.example.com`, `*` for any), and those of the configured `[[notify.webhooks]]`. A URL a
//! job or an API user gives (`notifyWebhooks`, the notifications test) must match one, so the
//! server cannot be made to post to its own network (server-side request forgery).
//!
//! Private, loopback and link-local addresses are reached only when listed by name or address,
//! not by a wildcard: at delivery the host's addresses are resolved and checked.

use std::net::IpAddr;

use reqwest::Url;

#[derive(Debug, Clone, Default)]
pub struct WebhookHosts {
    /// Lowercase host names or addresses, or `*.suffix`, or `*`.
    patterns: Vec<String>,
}

/// How a host matched the list.
#[derive(Debug, PartialEq, Eq)]
enum Match {
    /// By its exact name or address: private addresses allowed.
    Listed,
    /// By a wildcard: public addresses only.
    Wildcard,
}

impl WebhookHosts {
    /// `patterns` from the config, and the hosts of the configured webhooks' URLs.
    pub fn new<'a>(patterns: &[String], configured: impl Iterator<Item = &'a str>) -> Self {
        let mut all: Vec<String> = patterns
            .iter()
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        all.extend(configured.filter_map(|url| Some(host_of(url).ok()?.0)));
        WebhookHosts { patterns: all }
    }

    fn matches(&self, host: &str) -> Option<Match> {
        let exact = self.patterns.iter().any(|p| p == host);
        if exact {
            return Some(Match::Listed);
        }
        let wildcard = self
            .patterns
            .iter()
            .any(|pattern| match pattern.strip_prefix('*') {
                Some("") => true,
                Some(suffix) => suffix.starts_with('.') && host.ends_with(suffix),
                None => false,
            });
        wildcard.then_some(Match::Wildcard)
    }

    /// Why `url` may not be posted to, if it may not (its host is not allowed, or is a
    /// private address reached through a wildcard).
    pub fn check(&self, url: &str) -> Result<(), String> {
        let (host, ip) = host_of(url)?;
        match (self.matches(&host), ip) {
            (None, _) => Err(not_allowed(&host)),
            (Some(Match::Wildcard), Some(ip)) if !is_public(ip) => Err(private(&host, ip)),
            _ => Ok(()),
        }
    }

    /// [`check`](Self::check), then, for a name matched by a wildcard, whether every address
    /// it resolves to is public. (A name that changes its answers between this lookup and
    /// the POST's is not caught: list hosts by exact name to be sure.)
    pub async fn check_resolved(&self, url: &str) -> Result<(), String> {
        self.check(url)?;
        let (host, ip) = host_of(url)?;
        if ip.is_some() || self.matches(&host) == Some(Match::Listed) {
            return Ok(());
        }
        let port = Url::parse(url).ok().and_then(|u| u.port_or_known_default());
        let addresses = tokio::net::lookup_host((host.as_str(), port.unwrap_or(443)))
            .await
            .map_err(|error| format!("cannot resolve {host}: {error}"))?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(private(&host, address.ip()));
            }
        }
        Ok(())
    }
}

fn not_allowed(host: &str) -> String {
    format!("webhooks to '{host}' are not allowed: list it in [notify] webhook_hosts")
}

fn private(host: &str, ip: IpAddr) -> String {
    format!(
        "'{host}' is the private address {ip}: webhooks reach private addresses only when \
         [notify] webhook_hosts lists them by name or address"
    )
}

/// The URL's host, lowercase (an IPv6 address without brackets), and its address if it is one.
fn host_of(url: &str) -> Result<(String, Option<IpAddr>), String> {
    let parsed = Url::parse(url).map_err(|error| format!("'{url}' is not a URL: {error}"))?;
    let Some(host) = parsed.host_str() else {
        return Err(format!("'{url}' has no host"));
    };
    // The parser writes addresses in one spelling (0x7f000001 is 127.0.0.1), IPv6 bracketed.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip = host.parse().ok();
    Ok((host, ip))
}

/// Reachable from the internet: not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, documentation or unique-local.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || shared
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            let unique_local = first & 0xfe00 == 0xfc00;
            let link_local = first & 0xffc0 == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || unique_local || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(patterns: &[&str]) -> WebhookHosts {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        WebhookHosts::new(&patterns, ["https://ops.example.net/hook"].into_iter())
    }

    #[test]
    fn hosts_must_be_listed_and_private_ones_by_name() {
        let list = hosts(&["hooks.example.com", "*.corp.example", "10.0.0.5"]);
        assert!(list.check("https://hooks.example.com/x").is_ok());
        assert!(list.check("https://HOOKS.example.com:8443/x").is_ok());
        assert!(list.check("https://a.corp.example/x").is_ok());
        assert!(
            list.check("https://ops.example.net/other").is_ok(),
            "configured webhooks' hosts"
        );
        assert!(
            list.check("http://10.0.0.5/x").is_ok(),
            "a private address listed"
        );
        assert!(list.check("https://corp.example/x").is_err());
        assert!(list.check("https://evil.example/x").is_err());
        assert!(list.check("http://127.0.0.1/x").is_err());
        assert!(list.check("http://169.254.169.254/latest").is_err());

        let any = hosts(&["*"]);
        assert!(any.check("https://anything.example/x").is_ok());
        for private in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://0x7f000001/",
        ] {
            assert!(any.check(private).is_err(), "{private}");
        }
        assert!(
            hosts(&[]).check("https://hooks.example.com/x").is_err(),
            "nothing listed: none"
        );
    }

    #[tokio::test]
    async fn a_wildcard_name_resolving_to_loopback_is_refused() {
        let any = hosts(&["*"]);
        assert!(any.check_resolved("http://localhost:9/x").await.is_err());
        let listed = hosts(&["localhost"]);
        assert!(listed.check_resolved("http://localhost:9/x").await.is_ok());
    }
}
