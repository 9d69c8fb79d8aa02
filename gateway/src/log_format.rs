//! How log lines are written: one choice the log setup and the access log both read.

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (no colours when stderr is not a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
