//! Flood control: a job failing every second must not send thousands of mails.
//!
//! Each (job, channel) has a window. The first notice outside a window is sent at once and
//! opens a window of `window_ms`; notices inside it are gathered. When the window ends, what
//! it gathered is sent as one digest, and a new window opens (so a flood that goes on sends
//! one digest per window); a window that gathered nothing just closes. Pure logic: the
//! notifier owns the timers.

use std::collections::HashMap;

use dron_model::notice::Channel;

/// What to do with a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it now; a window opened, ending at this time (None: flood control is off).
    Now { window_ends_ms: Option<i64> },
    /// Gathered into the open window's digest.
    Later,
}

/// A digest due at a window's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Keys of the gathered notices, oldest first.
    pub keys: Vec<String>,
    /// When the window opened in its place ends.
    pub next_window_ends_ms: i64,
}

struct Window {
    ends_ms: i64,
    gathered: Vec<String>,
}

pub struct Flood {
    /// 0: no flood control, every notice is sent alone.
    window_ms: i64,
    windows: HashMap<(String, Channel), Window>,
}

impl Flood {
    pub fn new(window_ms: i64) -> Flood {
        Flood {
            window_ms: window_ms.max(0),
            windows: HashMap::new(),
        }
    }

    pub fn admit(&mut self, job: &str, channel: &Channel, key: &str, now_ms: i64) -> Admit {
        if self.window_ms == 0 {
            return Admit::Now {
                window_ends_ms: None,
            };
        }
        let id = (job.to_string(), channel.clone());
        // A window that ended with notices gathered is still open until its timer sends the
        // digest: a notice arriving meanwhile joins it rather than replacing it.
        if let Some(window) = self.windows.get_mut(&id)
            && (now_ms < window.ends_ms || !window.gathered.is_empty())
        {
            window.gathered.push(key.to_string());
            return Admit::Later;
        }
        let ends_ms = now_ms + self.window_ms;
        let window = Window {
            ends_ms,
            gathered: Vec::new(),
        };
        self.windows.insert(id, window);
        Admit::Now {
            window_ends_ms: Some(ends_ms),
        }
    }

    /// The window of (job, channel) ends: answers its digest, if it gathered anything. A
    /// call before the window's end (a stale timer) changes nothing.
    pub fn close(&mut self, job: &str, channel: &Channel, now_ms: i64) -> Option<Digest> {
        let id = (job.to_string(), channel.clone());
        let window = self.windows.get(&id)?;
        if now_ms < window.ends_ms {
            return None;
        }
        let window = self.windows.remove(&id)?;
        if window.gathered.is_empty() {
            return None;
        }
        let next_window_ends_ms = now_ms + self.window_ms;
        let next = Window {
            ends_ms: next_window_ends_ms,
            gathered: Vec::new(),
        };
        self.windows.insert(id, next);
        Some(Digest {
            keys: window.gathered,
            next_window_ends_ms,
        })
    }

    /// When the window of (job, channel) ends, if one is open.
    pub fn window_end(&self, job: &str, channel: &Channel) -> Option<i64> {
        let id = (job.to_string(), channel.clone());
        self.windows.get(&id).map(|window| window.ends_ms)
    }

    /// Open windows (for tests and metrics).
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: Channel = Channel::Email;

    #[test]
    fn a_notice_after_the_end_of_a_window_with_a_digest_due_joins_that_digest() {
        let mut flood = Flood::new(1_000);
        flood.admit("j", &MAIL, "k0", 0);
        assert_eq!(flood.admit("j", &MAIL, "k1", 500), Admit::Later);
        // The window's timer has not run yet: the digest is still due, k2 joins it.
        assert_eq!(flood.admit("j", &MAIL, "k2", 1_001), Admit::Later);
        let digest = flood.close("j", &MAIL, 1_002).unwrap();
        assert_eq!(digest.keys, ["k1", "k2"]);
    }

    #[test]
    fn the_first_notice_goes_at_once_and_the_rest_wait_for_the_digest() {
        let mut flood = Flood::new(1_000);
        let first = flood.admit("j", &MAIL, "k0", 0);
        assert_eq!(
            first,
            Admit::Now {
                window_ends_ms: Some(1_000)
            }
        );
        for (i, at) in [100, 500, 999].into_iter().enumerate() {
            assert_eq!(
                flood.admit("j", &MAIL, &format!("k{}", i + 1), at),
                Admit::Later
            );
        }
        assert_eq!(flood.close("j", &MAIL, 999), None, "too early: nothing yet");
        let digest = flood.close("j", &MAIL, 1_000).unwrap();
        assert_eq!(digest.keys, ["k1", "k2", "k3"]);
        assert_eq!(digest.next_window_ends_ms, 2_000);
        // The flood goes on: gathered again, sent at the next window's end.
        assert_eq!(flood.admit("j", &MAIL, "k4", 1_500), Admit::Later);
        assert_eq!(flood.close("j", &MAIL, 2_000).unwrap().keys, ["k4"]);
        // Quiet for a window: it closes, and the next notice goes at once again.
        assert_eq!(flood.close("j", &MAIL, 3_000), None);
        assert_eq!(flood.open_windows(), 0);
        assert!(matches!(
            flood.admit("j", &MAIL, "k5", 3_001),
            Admit::Now { .. }
        ));
    }

    #[test]
    fn windows_are_per_job_and_channel() {
        let mut flood = Flood::new(1_000);
        let hook = Channel::Webhook("http://h/".into());
        assert!(matches!(flood.admit("a", &MAIL, "1", 0), Admit::Now { .. }));
        assert!(matches!(flood.admit("b", &MAIL, "2", 0), Admit::Now { .. }));
        assert!(matches!(flood.admit("a", &hook, "1", 0), Admit::Now { .. }));
        assert_eq!(flood.admit("a", &MAIL, "3", 10), Admit::Later);
        assert_eq!(flood.close("b", &MAIL, 1_000), None);
        assert_eq!(flood.close("a", &hook, 1_000), None);
        assert_eq!(flood.close("a", &MAIL, 1_000).unwrap().keys, ["3"]);
    }

    #[test]
    fn a_flood_sends_one_message_per_window() {
        // A job failing every 10 ms for 10 s, with a 1 s window: 1 mail, then 10 digests.
        let mut flood = Flood::new(1_000);
        let mut messages = 0;
        let mut notices_sent = 0;
        let mut next_close = None;
        for at in (0..10_000).step_by(10) {
            if let Some(close_at) = next_close.filter(|c| *c <= at)
                && let Some(digest) = flood.close("j", &MAIL, close_at)
            {
                messages += 1;
                notices_sent += digest.keys.len();
                next_close = Some(digest.next_window_ends_ms);
            }
            if let Admit::Now { window_ends_ms } = flood.admit("j", &MAIL, &at.to_string(), at) {
                messages += 1;
                notices_sent += 1;
                next_close = window_ends_ms;
            }
        }
        let last = flood.close("j", &MAIL, next_close.unwrap()).unwrap();
        messages += 1;
        notices_sent += last.keys.len();
        assert_eq!(notices_sent, 1_000, "every notice is told once");
        assert_eq!(messages, 11);
    }

    #[test]
    fn a_zero_window_turns_flood_control_off() {
        let mut flood = Flood::new(0);
        for at in 0..5 {
            let admitted = flood.admit("j", &MAIL, &at.to_string(), at);
            assert_eq!(
                admitted,
                Admit::Now {
                    window_ends_ms: None
                }
            );
        }
        assert_eq!(flood.open_windows(), 0);
    }
}
