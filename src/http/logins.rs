//! A limit on failed logins per client address: after [`MAX_FAILURES`] refused credentials
//! within [`WINDOW`], an address is answered 429 with `Retry-After` until the window ends,
//! whatever it sends, so that a password or token cannot be guessed at the network's speed.
//! Only requests that carried credentials count: a browser's first request, without any,
//! is not a failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused credentials an address may send within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// How long failures are remembered, counted from an address's first in the window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (a few MB): beyond, new addresses are not counted until old
/// windows end (an attacker with that many addresses is not stopped by this anyway).
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Default)]
pub struct FailedLogins {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl FailedLogins {
    /// How long `address` must wait before its credentials are looked at again; None: now.
    pub fn blocked_for(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let failures = by_address.get(&key(address))?;
        let ends = failures.since + WINDOW;
        (failures.count >= MAX_FAILURES && now < ends).then(|| ends - now)
    }

    /// Counts a refused login from `address`.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        let mut by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if by_address.len() >= MAX_ADDRESSES {
            by_address.retain(|_, failures| now < failures.since + WINDOW);
        }
        if by_address.len() >= MAX_ADDRESSES && !by_address.contains_key(&key(address)) {
            return;
        }
        let failures = by_address.entry(key(address)).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now >= failures.since + WINDOW {
            *failures = Failures {
                since: now,
                count: 0,
            };
        }
        failures.count = failures.count.saturating_add(1);
    }
}

/// IPv6 clients are counted by their /64: one host usually holds a whole /64.
fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends() {
        let logins = FailedLogins::default();
        let (attacker, other) = ("10.0.0.9".parse().unwrap(), "10.0.0.8".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(logins.blocked_for(attacker, t0), None, "after {i}");
            logins.failed(attacker, t0);
        }
        let waited = logins.blocked_for(attacker, t0 + Duration::from_secs(10));
        assert_eq!(waited, Some(WINDOW - Duration::from_secs(10)));
        assert_eq!(logins.blocked_for(other, t0), None);
        assert_eq!(logins.blocked_for(attacker, t0 + WINDOW), None);
        // A new window starts from nothing.
        logins.failed(attacker, t0 + WINDOW);
        assert_eq!(logins.blocked_for(attacker, t0 + WINDOW), None);
    }

    #[test]
    fn ipv6_addresses_of_one_64_count_together() {
        let logins = FailedLogins::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            let address: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            logins.failed(address, t0);
        }
        assert!(
            logins
                .blocked_for("2001:db8::ffff".parse().unwrap(), t0)
                .is_some()
        );
        assert_eq!(logins.blocked_for("2001:db9::1".parse().unwrap(), t0), None);
    }
}
