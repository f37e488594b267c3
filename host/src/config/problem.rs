//! Problems found in a deployment file, located by line and column.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// One problem in a deployment file: where, which field, what is wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
    /// Dotted path, e.g. `checks[0].min` or `plugins.canary.source`; empty for the file.
    pub field: String,
    pub message: String,
    /// What to do about it; empty if the message says it all.
    pub help: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if !self.field.is_empty() {
            write!(f, "`{}`: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

/// Maps dotted field paths to byte spans of the source, and byte offsets to line:column.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    pub file: String,
    line_starts: Vec<usize>,
    source: String,
    /// Span of each key (`key`) and of each value (the path itself).
    pub spans: BTreeMap<String, Range<usize>>,
    /// Span of each value, to name the innermost field of a type error.
    pub value_spans: BTreeMap<String, Range<usize>>,
}

impl SpanIndex {
    pub fn new(file: &str, source: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        SpanIndex {
            file: file.to_string(),
            line_starts,
            source: source.to_string(),
            spans: BTreeMap::new(),
            value_spans: BTreeMap::new(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .source
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }

    /// The span of `field`, or of its closest recorded ancestor.
    pub fn span_of(&self, field: &str) -> Option<Range<usize>> {
        let mut path = field.to_string();
        loop {
            if let Some(s) = self.spans.get(&path) {
                return Some(s.clone());
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }

    /// The innermost field under `prefix` whose value contains `span`.
    pub fn innermost(&self, prefix: &str, span: &Range<usize>) -> Option<String> {
        self.value_spans
            .iter()
            .filter(|(p, s)| {
                (p.as_str() == prefix
                    || p.starts_with(&format!("{prefix}."))
                    || p.starts_with(&format!("{prefix}[")))
                    && s.start <= span.start
                    && span.end <= s.end
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(p, _)| p.clone())
    }

    /// A problem located at `field` (or its closest ancestor that appears in the file).
    pub fn problem(
        &self,
        field: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Problem {
        let (line, column) = self
            .span_of(field)
            .map(|s| self.line_col(s.start))
            .unwrap_or((0, 0));
        Problem {
            file: self.file.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
            help: help.into(),
        }
    }

    /// A problem at an explicit byte span.
    pub fn problem_at(
        &self,
        span: Option<Range<usize>>,
        field: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Problem {
        match span {
            Some(s) => {
                let (line, column) = self.line_col(s.start);
                Problem {
                    file: self.file.clone(),
                    line,
                    column,
                    field: field.to_string(),
                    message: message.into(),
                    help: help.into(),
                }
            }
            None => self.problem(field, message, help),
        }
    }
}

/// Closest candidate to `word`, for "did you mean" hints.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let idx = SpanIndex::new("f.toml", "a = 1\nbb = 2\n");
        assert_eq!(idx.line_col(0), (1, 1));
        assert_eq!(idx.line_col(6), (2, 1));
        assert_eq!(idx.line_col(9), (2, 4));
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggest("verison", ["version", "app"]), Some("version"));
        assert_eq!(suggest("zzz", ["version", "app"]), None);
    }
}
