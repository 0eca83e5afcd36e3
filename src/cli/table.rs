//! Plain-text tables and the cell formats they share.

use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart; no trailing blanks.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` UTC; `-` when absent or empty.
pub fn time(value: &Value) -> String {
    match value.as_str() {
        None | Some("") => "-".to_string(),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.to_utc().format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|_| text.to_string()),
    }
}

/// Any JSON scalar as text; `-` for null or absent.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) if text.is_empty() => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Pretty JSON for stdout.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
