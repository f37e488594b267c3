//! Everything a plugin prints: `dax:host/log` lines and its stdout/stderr, into the host's
//! `tracing` output tagged with the plugin's name. Bounded per call (lines and bytes, the
//! rest dropped with one note) and escaped, so a plugin can neither flood the operator's
//! terminal nor forge a line that looks like the host's own.

use crate::plugin::bindings::host_log::{Host, Level};
use crate::plugin::sandbox::PluginState;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

/// Longest line kept; the rest is cut with a marker.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Lines accepted per call (log, stdout and stderr together); later ones are dropped.
pub const MAX_LINES_PER_CALL: u32 = 1_000;
/// Bytes accepted per call (log, stdout and stderr together); later lines are dropped.
pub const MAX_BYTES_PER_CALL: usize = 256 * 1024;
/// Last stderr lines kept for the error of a failed call (a guest panic prints there).
const STDERR_TAIL_LINES: usize = 4;
const STDERR_TAIL_LINE_BYTES: usize = 512;

impl Host for PluginState {
    fn log(&mut self, lvl: Level, message: String) {
        self.output.lock().log(lvl, &message);
    }
}

/// Which stdio stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The output of one plugin instance during the current call.
#[derive(Debug)]
pub struct PluginOutput {
    plugin: Arc<str>,
    lines: u32,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Unterminated line per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    stderr_tail: VecDeque<String>,
}

impl PluginOutput {
    pub fn new(plugin: Arc<str>) -> Self {
        PluginOutput {
            plugin,
            lines: 0,
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            partial: [Vec::new(), Vec::new()],
            stderr_tail: VecDeque::new(),
        }
    }

    /// Reset the per-call budget before a call.
    pub fn begin_call(&mut self) {
        self.lines = 0;
        self.bytes = 0;
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
        self.stderr_tail.clear();
    }

    /// After a call: emit unterminated lines, and one note if anything was dropped.
    pub fn end_call(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.line(stream, &line);
            }
        }
        if self.dropped_lines > 0 {
            tracing::warn!(
                plugin = %self.plugin,
                "{} lines ({} bytes) of plugin output dropped: at most {MAX_LINES_PER_CALL} lines and {} KiB per call are kept",
                self.dropped_lines,
                self.dropped_bytes,
                MAX_BYTES_PER_CALL / 1024
            );
        }
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
    }

    /// The last lines the plugin wrote to stderr in this call (escaped), for an error.
    pub fn stderr_tail(&mut self) -> Option<String> {
        let partial = std::mem::take(&mut self.partial[Stream::Stderr as usize]);
        if !partial.is_empty() {
            self.line(Stream::Stderr, &partial);
        }
        if self.stderr_tail.is_empty() {
            return None;
        }
        Some(
            self.stderr_tail
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(" | "),
        )
    }

    /// Bytes written to stdout/stderr, split into lines.
    pub fn write(&mut self, stream: Stream, mut buf: &[u8]) {
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let (line, rest) = buf.split_at(pos);
            buf = &rest[1..];
            let partial = &mut self.partial[stream as usize];
            if partial.is_empty() {
                self.line(stream, line);
            } else {
                partial.extend_from_slice(line);
                let whole = std::mem::take(partial);
                self.line(stream, &whole);
            }
        }
        let partial = &mut self.partial[stream as usize];
        partial.extend_from_slice(buf);
        // A line without newline longer than the cap is flushed as is.
        if partial.len() > MAX_MESSAGE_BYTES {
            let whole = std::mem::take(partial);
            self.line(stream, &whole);
        }
    }

    fn line(&mut self, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if stream == Stream::Stderr {
            if self.stderr_tail.len() == STDERR_TAIL_LINES {
                self.stderr_tail.pop_front();
            }
            self.stderr_tail
                .push_back(cut(&escape(text), STDERR_TAIL_LINE_BYTES).into_owned());
        }
        if let Some(text) = self.admit(text) {
            tracing::info!(plugin = %self.plugin, stream = stream.name(), "{text}");
        }
    }

    /// One `dax:host/log` line.
    pub fn log(&mut self, lvl: Level, message: &str) {
        let Some(text) = self.admit(message) else {
            return;
        };
        let plugin = &self.plugin;
        match lvl {
            Level::Trace => tracing::trace!(plugin = %plugin, "{text}"),
            Level::Debug => tracing::debug!(plugin = %plugin, "{text}"),
            Level::Info => tracing::info!(plugin = %plugin, "{text}"),
            Level::Warn => tracing::warn!(plugin = %plugin, "{text}"),
            Level::Error => tracing::error!(plugin = %plugin, "{text}"),
        }
    }

    /// Count a line against the call's budget; the escaped, cut text if it is kept.
    fn admit(&mut self, text: &str) -> Option<String> {
        if self.lines >= MAX_LINES_PER_CALL || self.bytes + text.len() > MAX_BYTES_PER_CALL {
            self.dropped_lines += 1;
            self.dropped_bytes += text.len() as u64;
            return None;
        }
        self.lines += 1;
        self.bytes += text.len().min(MAX_MESSAGE_BYTES);
        Some(cut(&escape(text), MAX_MESSAGE_BYTES).into_owned())
    }
}

/// Cut `text` to at most `max` bytes on a character boundary, saying how much was cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let kept = truncate(text, max);
    Cow::Owned(format!(
        "{kept}… [{} more bytes cut]",
        text.len() - kept.len()
    ))
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Escape what could make plugin text look like more than one line or restyle the
/// terminal: newlines and every other control character (ANSI escapes start with one),
/// Unicode line separators and bidirectional overrides. `\n` becomes the two characters `\n`.
pub fn escape(text: &str) -> Cow<'_, str> {
    fn risky(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(risky) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if risky(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_newlines_and_terminal_controls() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("a\n2026-01-01 INFO dax: deployment promoted"),
            "a\\n2026-01-01 INFO dax: deployment promoted"
        );
        assert_eq!(escape("\x1b[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(escape("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn cut_marks_what_it_removed() {
        assert_eq!(cut("abcdef", 10), "abcdef");
        assert_eq!(cut("abcdef", 2), "ab… [4 more bytes cut]");
    }

    #[test]
    fn output_is_bounded_per_call() {
        let mut out = PluginOutput::new("p".into());
        out.begin_call();
        for _ in 0..(MAX_LINES_PER_CALL + 10) {
            out.write(Stream::Stdout, b"line\n");
        }
        assert_eq!(out.lines, MAX_LINES_PER_CALL);
        assert_eq!(out.dropped_lines, 10);
        out.end_call();
        out.begin_call();
        out.write(Stream::Stderr, b"panicked at x\nboom");
        assert_eq!(out.stderr_tail().unwrap(), "panicked at x | boom");
    }
}
