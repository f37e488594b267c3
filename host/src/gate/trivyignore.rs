//! Reading Trivy's `.trivyignore` file into gate ignore entries.
//!
//! Format (as Trivy reads it): one id per line, `#` starts a comment, and an optional
//! `exp:YYYY-MM-DD` after the id makes the entry expire on that date. Text after `#` on an
//! entry's line becomes its reason.

use super::IgnoreRule;
use chrono::NaiveDate;

/// Parse the text of a `.trivyignore` file. `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<IgnoreRule>, String> {
    let mut rules = Vec::new();
    // A byte-order mark (Windows editors write one) would become part of the first id, which
    // then never matches (found by tests/fuzz).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, raw) in text.lines().enumerate() {
        let (body, comment) = match raw.split_once('#') {
            Some((b, c)) => (b, Some(c.trim())),
            None => (raw, None),
        };
        let mut words = body.split_whitespace();
        let Some(id) = words.next() else { continue };
        let mut expires = None;
        for word in words {
            match word.strip_prefix("exp:") {
                Some(date) => {
                    expires = Some(NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|e| {
                        format!(
                            "{origin}:{}: invalid expiry `{word}` ({e}): write exp:2027-01-01",
                            n + 1
                        )
                    })?)
                }
                None => {
                    return Err(format!(
                        "{origin}:{}: unexpected `{word}` after `{id}`: a line is `ID [exp:YYYY-MM-DD] [# reason]`",
                        n + 1
                    ))
                }
            }
        }
        rules.push(IgnoreRule {
            id: id.to_string(),
            expires,
            reason: comment.filter(|c| !c.is_empty()).map(str::to_string),
            packages: Vec::new(),
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_expiry_and_comments() {
        let text = "# accepted risks\nCVE-2019-1559\nCVE-2018-0734 exp:2020-01-01 # waiting for vendor\n\n  DS002  \n";
        let rules = parse(text, ".trivyignore").unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].id, "CVE-2019-1559");
        assert_eq!(rules[0].expires, None);
        assert_eq!(rules[1].expires, NaiveDate::from_ymd_opt(2020, 1, 1));
        assert_eq!(rules[1].reason.as_deref(), Some("waiting for vendor"));
        assert_eq!(rules[2].id, "DS002");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_id() {
        let rules = parse("\u{feff}CVE-2019-1559\r\nCVE-2\r\n", ".trivyignore").unwrap();
        assert_eq!(rules[0].id, "CVE-2019-1559");
        assert_eq!(rules[1].id, "CVE-2");
    }

    #[test]
    fn rejects_bad_expiry_with_line_number() {
        let err = parse("CVE-1\nCVE-2 exp:soon\n", "x/.trivyignore").unwrap_err();
        assert!(err.contains("x/.trivyignore:2"), "{err}");
    }
}
