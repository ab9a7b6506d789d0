//! One tracing set-up for the binary: human-readable or JSON lines on stderr.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logs go to stderr, filtered by `STASIS_LOG` (e.g. `info`, `stasis_core=debug`), else at
/// `default_level`. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("STASIS_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
