//! How a strategy reads one `analysis` outcome.
//!
//! Rules (shared by every strategy, after Flagger): a check passes only with verdict `pass`;
//! `fail`, `no-data` and `error` all count as a failed analysis (no data is never a pass).
//! With `compareBaseline`, the judge score must also be present: score >= `pass` passes,
//! `marginal` <= score < `pass` is inconclusive, lower fails. No configured checks and no
//! score asked means the analysis passes (there is nothing to fail), as in Flagger.

use crate::params::ScoreThresholds;
use crate::types::{AnalysisOutcome, CheckVerdict};

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    Inconclusive(String),
}

pub fn classify(
    outcome: &AnalysisOutcome,
    compare_baseline: bool,
    scores: &ScoreThresholds,
) -> Verdict {
    let bad: Vec<String> = outcome
        .checks
        .iter()
        .filter(|c| c.verdict != CheckVerdict::Pass)
        .map(|c| {
            let kind = match c.verdict {
                CheckVerdict::Fail => "failed",
                CheckVerdict::NoData => "no data",
                CheckVerdict::Error => "error",
                CheckVerdict::Pass => "passed",
            };
            if c.detail.is_empty() {
                format!("{} {kind}", c.name)
            } else {
                format!("{} {kind} ({})", c.name, c.detail)
            }
        })
        .collect();
    if !bad.is_empty() {
        return Verdict::Fail(bad.join("; "));
    }
    let n = outcome.checks.len();
    if !compare_baseline {
        return Verdict::Pass(format!("{n} check(s) passed"));
    }
    match outcome.score {
        None => Verdict::Fail("judge gave no score (no baseline comparison data)".into()),
        Some(s) if s.is_nan() => Verdict::Fail("judge score is NaN".into()),
        Some(s) if s < scores.marginal => {
            Verdict::Fail(format!("judge score {s:.1} < marginal {}", scores.marginal))
        }
        Some(s) if s < scores.pass => Verdict::Inconclusive(format!(
            "judge score {s:.1} between marginal {} and pass {}",
            scores.marginal, scores.pass
        )),
        Some(s) => Verdict::Pass(format!("{n} check(s) passed, judge score {s:.1}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::CheckResult;

    fn check(verdict: CheckVerdict) -> CheckResult {
        CheckResult {
            name: "rate".into(),
            verdict,
            value: None,
            detail: String::new(),
        }
    }

    #[test]
    fn verdicts() {
        let th = ScoreThresholds::default();
        let pass = AnalysisOutcome {
            checks: vec![check(CheckVerdict::Pass)],
            score: None,
        };
        assert!(matches!(classify(&pass, false, &th), Verdict::Pass(_)));
        for v in [
            CheckVerdict::Fail,
            CheckVerdict::NoData,
            CheckVerdict::Error,
        ] {
            let o = AnalysisOutcome {
                checks: vec![check(CheckVerdict::Pass), check(v)],
                score: Some(100.0),
            };
            assert!(
                matches!(classify(&o, true, &th), Verdict::Fail(_)),
                "{v:?} must fail"
            );
        }
        assert!(
            matches!(classify(&pass, true, &th), Verdict::Fail(_)),
            "missing score fails"
        );
        let s = |x| AnalysisOutcome {
            checks: vec![],
            score: Some(x),
        };
        assert!(matches!(classify(&s(96.0), true, &th), Verdict::Pass(_)));
        assert!(matches!(classify(&s(95.0), true, &th), Verdict::Pass(_)));
        assert!(matches!(
            classify(&s(80.0), true, &th),
            Verdict::Inconclusive(_)
        ));
        assert!(matches!(classify(&s(74.9), true, &th), Verdict::Fail(_)));
        assert!(matches!(
            classify(&AnalysisOutcome::default(), false, &th),
            Verdict::Pass(_)
        ));
    }
}
