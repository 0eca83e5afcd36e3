//! Where `dron serve` and `dron agent` write their logs: stderr, as text for a person or as
//! JSON lines for a log store (`--log-format`, `log_format` in the config).
//!
//! Colour codes only reach a terminal: written to a file, a pipe or the journal, text lines
//! are plain, and `NO_COLOR` (any non-empty value, <https://no-color.org>) turns colour off
//! everywhere. A JSON line carries the fields of the span it was logged in at the top level
//! of a `span` object, so a run's lines (`job`, `task`, `shard`: actors/src/trace.rs) can be
//! filtered in the store.

use std::io::IsTerminal;

use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event; colour only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields, and the
    /// current span's fields under `span`.
    Json,
}

/// Installs the process-wide subscriber writing to stderr. `DRON_LOG` filters as
/// `RUST_LOG` does (default: info, openraft at warn).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRON_LOG")
        // openraft logs every vote at info: a cluster's log would be mostly elections.
        .unwrap_or_else(|_| "info,openraft=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour_wanted()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Colour on stderr: only on a terminal, and never with `NO_COLOR` set.
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    colour_allowed(std::io::stderr().is_terminal(), no_color)
}

fn colour_allowed(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour_allowed(true, false));
        assert!(!colour_allowed(false, false));
        assert!(!colour_allowed(true, true));
        assert!(!colour_allowed(false, true));
    }

    #[test]
    fn the_format_is_read_in_lower_case() {
        #[derive(Deserialize)]
        struct File {
            log_format: LogFormat,
        }
        let json: File = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(toml::from_str::<File>("log_format = \"xml\"").is_err());
    }
}
