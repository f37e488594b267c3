//! The statistical judge: compares a candidate's metric series with the stable (baseline)
//! series, after Kayenta's NetflixACAJudge and its `MannWhitneyClassifier`.
//!
//! Per metric:
//! 1. non-finite values are dropped (Kayenta's default NaN strategy `remove`);
//! 2. an empty series on either side is `NoData` (never a pass);
//! 3. identical series, or a single value shared by both, pass;
//! 4. otherwise a two-sided Mann–Whitney U test gives the Hodges–Lehmann estimate of the
//!    shift (median of all pairwise `candidate - baseline` differences) and its confidence
//!    interval (default 98%, as Kayenta's judge uses), computed like R's `wilcox.test`
//!    with `conf.int = TRUE` in its normal-approximation form (tie-corrected variance, no
//!    continuity correction): the interval bounds are the shifts `mu` where the
//!    standardised U statistic of `(candidate - mu, baseline)` crosses `±z`;
//! 5. the metric is `High` when the whole interval lies above `+tolerance × |estimate|`
//!    and the candidate mean is not below the baseline mean, `Low` symmetrically; a change
//!    only counts in the metric's `direction` (`increase` flags only High, `decrease` only
//!    Low, `either` both); everything else is `Pass`.
//!
//! Scoring (Kayenta's): each group scores `100 × passed / classified` over its metrics that
//! had data; groups without data are left out; the summary is the weighted mean of group
//! scores (weights from `group_weights`, else the largest `weight` of the group's metrics,
//! else 1). A `critical` metric that is High, Low or NoData makes the score 0. The score is
//! `pass` at `>= pass_threshold`, `marginal` at `>= marginal_threshold`, else `fail`; a
//! judgement in which no metric had data scores 0.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use std::collections::BTreeMap;

/// Which change of a metric is harmful (Kayenta's `direction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Only an increase fails (latency, error rate).
    Increase,
    /// Only a decrease fails (success rate, throughput).
    Decrease,
    /// Any significant change fails.
    #[default]
    Either,
}

/// One metric to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricInput {
    pub name: String,
    /// Scoring group; defaults to the metric's own name.
    #[serde(default)]
    pub group: Option<String>,
    /// The candidate's (Kayenta's "experiment") samples.
    pub candidate: Vec<f64>,
    /// The stable version's (Kayenta's "control") samples.
    pub baseline: Vec<f64>,
    #[serde(default)]
    pub direction: Direction,
    /// A failure of this metric fails the whole judgement.
    #[serde(default)]
    pub critical: bool,
    /// Weight of the metric's group when `JudgeConfig::group_weights` does not name it.
    #[serde(default)]
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeConfig {
    /// Confidence level of the interval on the shift, in (0, 1).
    pub confidence_level: f64,
    /// The interval must clear `tolerance × |estimate|` to count as a change (Kayenta's 0.25).
    pub tolerance: f64,
    pub group_weights: BTreeMap<String, f64>,
    pub pass_threshold: f64,
    pub marginal_threshold: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            confidence_level: 0.98,
            tolerance: 0.25,
            group_weights: BTreeMap::new(),
            pass_threshold: 95.0,
            marginal_threshold: 75.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    Pass,
    High,
    Low,
    NoData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub name: String,
    pub group: String,
    pub classification: Classification,
    pub critical: bool,
    /// Hodges–Lehmann estimate of `candidate - baseline`.
    pub estimate: Option<f64>,
    /// Confidence interval on the estimate.
    pub interval: Option<(f64, f64)>,
    /// `mean(candidate) / mean(baseline)` (1 when the baseline mean is 0).
    pub mean_ratio: Option<f64>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupScore {
    pub group: String,
    pub weight: f64,
    /// `None` when no metric of the group had data.
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreClass {
    Pass,
    Marginal,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeResult {
    /// 0..=100.
    pub score: f64,
    pub classification: ScoreClass,
    pub metrics: Vec<MetricResult>,
    pub groups: Vec<GroupScore>,
    /// One line for journals and notifications.
    pub summary: String,
}

/// Judge every metric and score the whole comparison.
pub fn judge(metrics: &[MetricInput], config: &JudgeConfig) -> JudgeResult {
    let results: Vec<MetricResult> = metrics.iter().map(|m| classify(m, config)).collect();

    let mut group_order: Vec<String> = Vec::new();
    for r in &results {
        if !group_order.contains(&r.group) {
            group_order.push(r.group.clone());
        }
    }
    let groups: Vec<GroupScore> = group_order
        .iter()
        .map(|g| {
            let members: Vec<&MetricResult> = results.iter().filter(|r| &r.group == g).collect();
            let with_data: Vec<&&MetricResult> = members
                .iter()
                .filter(|r| r.classification != Classification::NoData)
                .collect();
            let score = if with_data.is_empty() {
                None
            } else {
                let passed = with_data
                    .iter()
                    .filter(|r| r.classification == Classification::Pass)
                    .count();
                Some(100.0 * passed as f64 / with_data.len() as f64)
            };
            let weight = config.group_weights.get(g).copied().unwrap_or_else(|| {
                metrics
                    .iter()
                    .filter(|m| &group_name(m) == g)
                    .filter_map(|m| m.weight)
                    .fold(None, |acc: Option<f64>, w| {
                        Some(acc.map_or(w, |a| a.max(w)))
                    })
                    .unwrap_or(1.0)
            });
            GroupScore {
                group: g.clone(),
                weight,
                score,
            }
        })
        .collect();

    let critical_failures: Vec<&MetricResult> = results
        .iter()
        .filter(|r| r.critical && r.classification != Classification::Pass)
        .collect();
    // A weight that is not a finite positive number scores nothing: an infinite one made the
    // score NaN (found by tests/fuzz; `dax validate` also refuses such weights).
    let scored: Vec<&GroupScore> = groups
        .iter()
        .filter(|g| g.score.is_some() && g.weight > 0.0 && g.weight.is_finite())
        .collect();
    // Relative to the largest weight, so that huge finite weights cannot overflow the sums.
    let largest = scored.iter().map(|g| g.weight).fold(0.0, f64::max);
    let relative = |g: &GroupScore| g.weight / largest;
    let total_weight: f64 = scored.iter().map(|g| relative(g)).sum();
    let (score, why) = if !critical_failures.is_empty() {
        let names: Vec<String> = critical_failures
            .iter()
            .map(|r| format!("{} {}", r.name, label(r.classification)))
            .collect();
        (0.0, format!("critical metric failed: {}", names.join(", ")))
    } else if scored.is_empty() || total_weight <= 0.0 {
        (0.0, "no metric had data on both sides".to_string())
    } else {
        let s = scored
            .iter()
            .map(|g| relative(g) * g.score.unwrap_or(0.0))
            .sum::<f64>()
            / total_weight;
        // Rounding of the relative weights can land a hair outside 0..=100.
        let s = s.clamp(0.0, 100.0);
        let failing: Vec<String> = results
            .iter()
            .filter(|r| matches!(r.classification, Classification::High | Classification::Low))
            .map(|r| format!("{} {}", r.name, label(r.classification)))
            .collect();
        let why = if failing.is_empty() {
            "all metrics pass".to_string()
        } else {
            failing.join(", ")
        };
        (s, why)
    };
    let classification = if score >= config.pass_threshold {
        ScoreClass::Pass
    } else if score >= config.marginal_threshold {
        ScoreClass::Marginal
    } else {
        ScoreClass::Fail
    };
    let summary = format!(
        "judge score {score:.1} ({}): {why}",
        class_label(classification)
    );
    JudgeResult {
        score,
        classification,
        metrics: results,
        groups,
        summary,
    }
}

fn label(c: Classification) -> &'static str {
    match c {
        Classification::Pass => "pass",
        Classification::High => "high",
        Classification::Low => "low",
        Classification::NoData => "no data",
    }
}

fn class_label(c: ScoreClass) -> &'static str {
    match c {
        ScoreClass::Pass => "pass",
        ScoreClass::Marginal => "marginal",
        ScoreClass::Fail => "fail",
    }
}

fn group_name(m: &MetricInput) -> String {
    m.group.clone().unwrap_or_else(|| m.name.clone())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Classify one metric (steps 1–5 of the module doc).
pub fn classify(m: &MetricInput, config: &JudgeConfig) -> MetricResult {
    let finite = |v: &[f64]| -> Vec<f64> { v.iter().copied().filter(|x| x.is_finite()).collect() };
    let cand = finite(&m.candidate);
    let base = finite(&m.baseline);
    let mut out = MetricResult {
        name: m.name.clone(),
        group: group_name(m),
        classification: Classification::Pass,
        critical: m.critical,
        estimate: None,
        interval: None,
        mean_ratio: None,
        reason: String::new(),
    };
    if cand.is_empty() || base.is_empty() {
        out.classification = Classification::NoData;
        let side = if cand.is_empty() {
            "candidate"
        } else {
            "baseline"
        };
        out.reason = format!("no {side} data for {}", m.name);
        return out;
    }
    let base_mean = mean(&base);
    let ratio = if base_mean == 0.0 {
        1.0
    } else {
        mean(&cand) / base_mean
    };
    out.mean_ratio = Some(ratio);
    let mut cs = cand.clone();
    let mut bs = base.clone();
    cs.sort_by(f64::total_cmp);
    bs.sort_by(f64::total_cmp);
    if cs == bs || (cs[0] == cs[cs.len() - 1] && bs[0] == bs[bs.len() - 1] && cs[0] == bs[0]) {
        out.estimate = Some(0.0);
        out.reason = "candidate and baseline data are identical".into();
        return out;
    }
    let test = mann_whitney(&cand, &base, config.confidence_level);
    out.estimate = Some(test.estimate);
    out.interval = Some((test.lower, test.upper));
    let bound = config.tolerance * test.estimate.abs();
    let high = test.lower > bound && ratio >= 1.0;
    let low = test.upper < -bound && ratio <= 1.0;
    let watched_high = matches!(m.direction, Direction::Increase | Direction::Either);
    let watched_low = matches!(m.direction, Direction::Decrease | Direction::Either);
    let ci = format!(
        "shift {:.4} with {:.0}% interval [{:.4}, {:.4}]",
        test.estimate,
        config.confidence_level * 100.0,
        test.lower,
        test.upper
    );
    out.classification = if high && watched_high {
        Classification::High
    } else if low && watched_low {
        Classification::Low
    } else {
        Classification::Pass
    };
    out.reason = match out.classification {
        Classification::High => format!("{} is higher on the candidate: {ci}", m.name),
        Classification::Low => format!("{} is lower on the candidate: {ci}", m.name),
        _ if high || low => format!("{} changed in the harmless direction: {ci}", m.name),
        _ => format!("no significant change: {ci}"),
    };
    out
}

/// Result of [`mann_whitney`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// Hodges–Lehmann estimate of the shift `x - y`.
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    /// The U statistic of `x` (pairs with `x_i > y_j`, ties counting 1/2).
    pub u: f64,
}

/// Samples per side used by the test; longer series are thinned evenly (deterministically)
/// so the pairwise differences stay within a few million.
pub const MAX_SAMPLES: usize = 2_000;

fn thin(v: &[f64]) -> Vec<f64> {
    if v.len() <= MAX_SAMPLES {
        return v.to_vec();
    }
    (0..MAX_SAMPLES)
        .map(|i| v[i * v.len() / MAX_SAMPLES])
        .collect()
}

/// Two-sample Mann–Whitney test of `x` against `y` with a confidence interval on the shift.
/// Both samples must be non-empty and finite.
pub fn mann_whitney(x: &[f64], y: &[f64], confidence: f64) -> MannWhitney {
    let mut x = thin(x);
    let mut y = thin(y);
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let mut diffs: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    let k = diffs.len();
    let (_, upper_mid, _) = diffs.select_nth_unstable_by(k / 2, f64::total_cmp);
    let upper_mid = *upper_mid;
    let estimate = if k % 2 == 1 {
        upper_mid
    } else {
        // The largest value below the upper middle one is the lower middle one.
        let lower_mid = diffs[..k / 2]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lower_mid + upper_mid) / 2.0
    };
    let alpha = 1.0 - confidence.clamp(1e-6, 1.0 - 1e-9);
    let z = Normal::standard().inverse_cdf(1.0 - alpha / 2.0);
    let (lo, hi) = (x[0] - y[y.len() - 1], x[x.len() - 1] - y[0]);
    // The lower bound is where the statistic falls to +z, the upper where it falls to -z.
    let lower = root(&x, &y, z, lo, hi);
    let upper = root(&x, &y, -z, lo, hi);
    MannWhitney {
        estimate,
        lower,
        upper,
        u: u_statistic(&x, &y, 0.0),
    }
}

/// `U` of `(x - mu, y)`: pairs with `x_i - mu > y_j`, ties counting 1/2. `y` must be sorted.
fn u_statistic(x: &[f64], y: &[f64], mu: f64) -> f64 {
    let mut u = 0.0;
    for a in x {
        let a = a - mu;
        let below = y.partition_point(|b| *b < a);
        let not_above = y.partition_point(|b| *b <= a);
        u += below as f64 + 0.5 * (not_above - below) as f64;
    }
    u
}

/// Standardised U of `(x - mu, y)` with the tie-corrected variance.
fn z_statistic(x: &[f64], y: &[f64], mu: f64) -> f64 {
    let (n, m) = (x.len() as f64, y.len() as f64);
    let mut all: Vec<f64> = x.iter().map(|a| a - mu).chain(y.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1] == all[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let total = n + m;
    let var = n * m / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if var <= 0.0 {
        return 0.0;
    }
    (u_statistic(x, y, mu) - n * m / 2.0) / var.sqrt()
}

/// The shift where `z_statistic` (non-increasing in `mu`) crosses `target`, by bisection;
/// clamped to `[lo, hi]` like R's `wilcox.test` when the samples are too small to reach it.
fn root(x: &[f64], y: &[f64], target: f64, mut lo: f64, mut hi: f64) -> f64 {
    let f = |mu: f64| z_statistic(x, y, mu) - target;
    if f(lo) <= 0.0 {
        return lo;
    }
    if f(hi) >= 0.0 {
        return hi;
    }
    for _ in 0..200 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo + (hi - lo) / 2.0
}

#[cfg(test)]
mod tests;
