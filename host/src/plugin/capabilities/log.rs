//! `dax:host/log`: plugin log lines into the host's `tracing` output, tagged with the
//! plugin's name. Bounded so a chatty plugin cannot flood the operator's terminal.

use crate::plugin::bindings::host_log::{Host, Level};
use crate::plugin::sandbox::PluginState;

/// Longest message kept; the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Lines accepted per call before the plugin is silenced for the rest of the call.
pub const MAX_LINES_PER_CALL: u32 = 1_000;

impl Host for PluginState {
    fn log(&mut self, lvl: Level, message: String) {
        self.log_lines_this_call += 1;
        if self.log_lines_this_call > MAX_LINES_PER_CALL {
            if self.log_lines_this_call == MAX_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.plugin, "log limit reached ({MAX_LINES_PER_CALL} lines in one call); further lines dropped");
            }
            return;
        }
        let text = truncate(&message, MAX_MESSAGE_BYTES);
        let plugin = &*self.plugin;
        match lvl {
            Level::Trace => tracing::trace!(plugin, "{text}"),
            Level::Debug => tracing::debug!(plugin, "{text}"),
            Level::Info => tracing::info!(plugin, "{text}"),
            Level::Warn => tracing::warn!(plugin, "{text}"),
            Level::Error => tracing::error!(plugin, "{text}"),
        }
    }
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
