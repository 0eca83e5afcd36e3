//! A progress bar on stderr while a workload runs (stdout keeps the report, last line JSON).

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(workload: &str, total: u64) -> Progress {
        let bar = ProgressBar::new(total);
        let style =
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(workload.to_string());
        Progress { bar }
    }

    pub fn set(&mut self, position: u64, message: &str) {
        self.bar.set_position(position);
        self.bar.set_message(message.to_string());
    }

    /// A line printed above the bar (a step's figures); plain stderr when there is no
    /// terminal to draw the bar on.
    pub fn note(&mut self, line: &str) {
        match self.bar.is_hidden() {
            true => eprintln!("{line}"),
            false => self.bar.println(line),
        }
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
