use super::*;

/// Deterministic uniform samples in [lo, hi] (a small LCG; no randomness in tests).
fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn metric(name: &str, candidate: Vec<f64>, baseline: Vec<f64>) -> MetricInput {
    MetricInput {
        name: name.into(),
        group: None,
        candidate,
        baseline,
        direction: Direction::Either,
        critical: false,
        weight: None,
    }
}

#[test]
fn hand_computed_shift_and_interval() {
    // x - y over all pairs is i - j - 5 for i, j in 1..=5: -9..=-1, median -5.
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    let y = [6.0, 7.0, 8.0, 9.0, 10.0];
    let t = mann_whitney(&x, &y, 0.98);
    assert_eq!(t.estimate, -5.0);
    assert_eq!(t.u, 0.0);
    // sigma = sqrt(25 * 11 / 12) = 4.787, z(0.99) = 2.326: the bounds are where
    // #{d > mu} = 12.5 ± 11.14, i.e. the jumps at d = -8 (24 -> 22 pairs) and d = -2.
    assert!((t.lower - -8.0).abs() < 1e-6, "lower {}", t.lower);
    assert!((t.upper - -2.0).abs() < 1e-6, "upper {}", t.upper);
    let r = classify(
        &metric("latency", x.to_vec(), y.to_vec()),
        &JudgeConfig::default(),
    );
    assert_eq!(
        r.classification,
        Classification::Low,
        "[-8, -2] lies below -0.25 × 5"
    );
    let mut up = metric("latency", y.to_vec(), x.to_vec());
    assert_eq!(
        classify(&up, &JudgeConfig::default()).classification,
        Classification::High
    );
    up.direction = Direction::Decrease;
    assert_eq!(
        classify(&up, &JudgeConfig::default()).classification,
        Classification::Pass,
        "an increase is harmless here"
    );
}

#[test]
fn tiny_samples_clamp_to_the_range() {
    // 2 vs 2 can never reach z = 2.33: the interval is all pairwise differences (as in R).
    let t = mann_whitney(&[1.0, 2.0], &[3.0, 4.0], 0.98);
    assert_eq!((t.lower, t.upper), (-3.0, -1.0));
    let r = classify(
        &metric("m", vec![1.0, 2.0], vec![3.0, 4.0]),
        &JudgeConfig::default(),
    );
    assert_eq!(
        r.classification,
        Classification::Low,
        "the whole range is below -0.25 × 2"
    );
}

#[test]
fn kayenta_overlapping_ranges_pass() {
    // Kayenta's documented behaviour: candidate drawn from 40–45, baseline from 39–46 passes.
    for seed in 1..=20 {
        let m = metric(
            "cpu",
            uniform(seed, 60, 40.0, 45.0),
            uniform(seed + 1000, 60, 39.0, 46.0),
        );
        let res = judge(&[m], &JudgeConfig::default());
        assert_eq!(
            res.metrics[0].classification,
            Classification::Pass,
            "seed {seed}: {}",
            res.metrics[0].reason
        );
        assert_eq!(res.score, 100.0);
        assert_eq!(res.classification, ScoreClass::Pass);
    }
}

#[test]
fn kayenta_disjoint_ranges_fail() {
    // ...and 10–20 against 20–23 must not pass.
    for seed in 1..=20 {
        let m = metric(
            "rps",
            uniform(seed, 60, 10.0, 20.0),
            uniform(seed + 1000, 60, 20.0, 23.0),
        );
        let res = judge(std::slice::from_ref(&m), &JudgeConfig::default());
        assert_eq!(
            res.metrics[0].classification,
            Classification::Low,
            "seed {seed}"
        );
        assert_eq!(res.classification, ScoreClass::Fail);
        let (lo, hi) = res.metrics[0].interval.unwrap();
        assert!(lo < hi && hi < 0.0);
        // A decrease of an "increase is bad" metric (e.g. latency) is fine.
        let mut latency = m;
        latency.direction = Direction::Increase;
        assert_eq!(
            judge(&[latency], &JudgeConfig::default()).classification,
            ScoreClass::Pass
        );
    }
}

#[test]
fn small_samples_of_kayenta_ranges() {
    // Even 10 samples per side separate 10–20 from 20–23.
    let m = metric(
        "rps",
        uniform(7, 10, 10.0, 20.0),
        uniform(8, 10, 20.0, 23.0),
    );
    assert_eq!(
        classify(&m, &JudgeConfig::default()).classification,
        Classification::Low
    );
}

#[test]
fn no_data_identical_and_constant_series() {
    let cfg = JudgeConfig::default();
    let r = classify(&metric("m", vec![], vec![1.0]), &cfg);
    assert_eq!(r.classification, Classification::NoData);
    assert!(r.reason.contains("no candidate data"));
    let r = classify(&metric("m", vec![f64::NAN, f64::INFINITY], vec![1.0]), &cfg);
    assert_eq!(
        r.classification,
        Classification::NoData,
        "non-finite values are dropped"
    );
    assert_eq!(
        classify(&metric("m", vec![3.0, 1.0, 2.0], vec![1.0, 2.0, 3.0]), &cfg).classification,
        Classification::Pass
    );
    assert_eq!(
        classify(&metric("m", vec![5.0; 10], vec![5.0; 8]), &cfg).classification,
        Classification::Pass
    );
    // Two different constants: the shift is exact (no noise needed, unlike Kayenta).
    assert_eq!(
        classify(&metric("m", vec![6.0; 10], vec![5.0; 10]), &cfg).classification,
        Classification::High
    );
    // All metrics without data: score 0, fail.
    let res = judge(&[metric("m", vec![], vec![])], &cfg);
    assert_eq!((res.score, res.classification), (0.0, ScoreClass::Fail));
    assert!(res.summary.contains("no metric had data"));
}

#[test]
fn scores_groups_weights_and_critical() {
    let pass = || (uniform(1, 40, 40.0, 45.0), uniform(2, 40, 39.0, 46.0));
    let fail = || (uniform(3, 40, 10.0, 20.0), uniform(4, 40, 20.0, 23.0));
    let mk = |name: &str, (c, b): (Vec<f64>, Vec<f64>)| metric(name, c, b);
    let cfg = JudgeConfig::default();

    // 3 of 4 pass, one group each of equal weight: 75 => marginal.
    let ms = vec![
        mk("a", pass()),
        mk("b", pass()),
        mk("c", pass()),
        mk("d", fail()),
    ];
    let res = judge(&ms, &cfg);
    assert_eq!(res.score, 75.0);
    assert_eq!(res.classification, ScoreClass::Marginal);
    assert!(res.summary.contains("d low"), "{}", res.summary);

    // The same failure on a critical metric: score 0.
    let mut critical = ms.clone();
    critical[3].critical = true;
    let res = judge(&critical, &cfg);
    assert_eq!((res.score, res.classification), (0.0, ScoreClass::Fail));
    assert!(res.summary.contains("critical metric failed: d low"));

    // A critical metric without data fails too; a non-critical one is left out of the score.
    let mut nodata = mk("e", (vec![], vec![1.0]));
    let res = judge(&[mk("a", pass()), nodata.clone()], &cfg);
    assert_eq!(res.score, 100.0);
    nodata.critical = true;
    assert_eq!(judge(&[mk("a", pass()), nodata], &cfg).score, 0.0);

    // Group weights: latency (70) passes, errors (30) fails => 70.
    let mut lat = mk("p99", pass());
    lat.group = Some("latency".into());
    let mut err = mk("5xx", fail());
    err.group = Some("errors".into());
    let mut weighted = cfg.clone();
    weighted.group_weights = [("latency".to_string(), 70.0), ("errors".to_string(), 30.0)].into();
    let res = judge(&[lat.clone(), err.clone()], &weighted);
    assert!((res.score - 70.0).abs() < 1e-9);
    assert_eq!(res.classification, ScoreClass::Fail);
    weighted.marginal_threshold = 60.0;
    assert_eq!(
        judge(&[lat.clone(), err.clone()], &weighted).classification,
        ScoreClass::Marginal
    );
    // Metric-level weight when the config names no groups.
    lat.weight = Some(3.0);
    let res = judge(&[lat, err], &cfg);
    assert!(
        (res.score - 75.0).abs() < 1e-9,
        "3:1 weights => 75, got {}",
        res.score
    );
}

#[test]
fn results_serialise() {
    let res = judge(
        &[metric("m", vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.5])],
        &JudgeConfig::default(),
    );
    let json = serde_json::to_value(&res).unwrap();
    assert_eq!(json["classification"], "pass");
    assert_eq!(json["metrics"][0]["classification"], "pass");
    let cfg: JudgeConfig = serde_json::from_str(r#"{"pass_threshold": 90}"#).unwrap();
    assert_eq!((cfg.pass_threshold, cfg.confidence_level), (90.0, 0.98));
    let m: MetricInput = serde_json::from_str(
        r#"{"name":"x","candidate":[1],"baseline":[2],"direction":"increase"}"#,
    )
    .unwrap();
    assert_eq!(m.direction, Direction::Increase);
}

#[test]
fn long_series_stay_fast_and_correct() {
    let start = std::time::Instant::now();
    let m = metric(
        "latency",
        uniform(11, 20_000, 40.0, 45.0),
        uniform(12, 20_000, 39.0, 46.0),
    );
    assert_eq!(
        classify(&m, &JudgeConfig::default()).classification,
        Classification::Pass
    );
    let m = metric(
        "latency",
        uniform(13, 20_000, 41.0, 46.0),
        uniform(14, 20_000, 40.0, 45.0),
    );
    let r = classify(&m, &JudgeConfig::default());
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
    let est = r.estimate.unwrap();
    assert!((est - 1.0).abs() < 0.1, "shift of 1 estimated as {est}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn extreme_weights_keep_the_score_a_number() {
    // Regression found by tests/fuzz: an infinite weight, or two huge finite ones, made the
    // weighted mean NaN.
    let same = || (0..20).map(|i| i as f64).collect::<Vec<f64>>();
    for weights in [[f64::INFINITY, 1.0], [f64::MAX, f64::MAX], [1e308, 5e-324]] {
        let metrics: Vec<MetricInput> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| MetricInput {
                weight: Some(*w),
                ..metric(&format!("m{i}"), same(), same())
            })
            .collect();
        let r = judge(&metrics, &JudgeConfig::default());
        assert!(
            (0.0..=100.0).contains(&r.score),
            "{weights:?}: {}",
            r.summary
        );
    }
}
