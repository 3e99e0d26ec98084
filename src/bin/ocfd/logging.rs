//! Logs: structured `tracing` events on standard error (text or JSON, as configured), one line
//! per event, with a filter a reload can change; and errors explained on one line.

use ocf::config::{Config, LogFormat};

/// An error and its causes on one line, each said once: a cause whose text the message
/// already holds (an error that embeds its source) is not repeated.
pub(crate) fn explain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Writes each log event on one line: a value with line breaks in it (a TOML error, say) has
/// them written as `\n`, so that whoever reads the log line by line reads whole events.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.contains(&b'\n') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => {}
                b => line.push(b),
            }
        }
        if body.len() < buf.len() {
            line.push(b'\n');
        }
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Sets up logging to standard error in the configured format; returns what changes the
/// level on a reload.
pub(crate) fn init(cfg: &Config) -> ocf::server::reload::SetLogLevel {
    use tracing_subscriber::prelude::*;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| OneLine(std::io::stderr()));
    let fmt = match cfg.log.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.with_ansi(false).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    std::sync::Arc::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}
