use super::*;

fn vars() -> Vec<(String, String)> {
    vec![
        ("app".into(), "demo".into()),
        ("version".into(), "v2".into()),
    ]
}

#[test]
fn builtins_expand_with_defaults_and_overrides() {
    let q = render(builtin("request-success-rate"), &vars(), 30_000).unwrap();
    assert!(
        q.contains(r#"app="demo", slot="candidate", status_class!="5xx"}[30s]"#),
        "{q}"
    );
    assert!(!q.contains("{{"), "{q}");
    let mut v = vars();
    v.push(("slot".into(), "stable".into()));
    v.push(("interval".into(), "1m".into()));
    let q = render(builtin("request-duration"), &v, 30_000).unwrap();
    assert!(q.starts_with("1000 * histogram_quantile(0.99"), "{q}");
    assert!(q.contains(r#"slot="stable"}[1m]"#), "{q}");
    // Anything else is user PromQL and passes through.
    assert_eq!(builtin("up"), "up");
}

#[test]
fn template_errors_name_the_variable() {
    let e = render("up{job=\"{{ job }}\"}", &vars(), 1000).unwrap_err();
    assert!(
        matches!(&e, PromError::Query(m) if m.contains("`{{job}}`") && m.contains("app")),
        "{e:?}"
    );
    assert!(render("x{{app", &vars(), 1000).is_err());
    let q = render(r#"up{a="{{app}}"}"#, &[("app".into(), "x\"y".into())], 0).unwrap();
    assert_eq!(q, r#"up{a="x\"y"}"#);
}

#[test]
fn durations_and_urls() {
    assert_eq!(prom_duration(30_000), "30s");
    assert_eq!(prom_duration(120_000), "2m");
    assert_eq!(prom_duration(1_500), "1500ms");
    let u = instant_url(
        "http://127.0.0.1:9090/",
        "sum(rate(x[1m]))",
        1_700_000_000_123,
    );
    assert_eq!(
        u,
        "http://127.0.0.1:9090/api/v1/query?query=sum%28rate%28x%5B1m%5D%29%29&time=1700000000.123"
    );
    let u = range_url("http://h:1", "up", 100_000, 60_000, 0);
    assert!(u.ends_with("&start=40.000&end=100.000&step=1.000"), "{u}");
    let u = range_url("http://h:1", "up", 100_000, 60_000, 5_000);
    assert!(u.ends_with("&step=5.000"), "{u}");
}

#[test]
fn instant_answers() {
    let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"99.5"]}]}}"#;
    assert_eq!(
        interpret(200, one, "q", false).unwrap(),
        Answer::Value(99.5)
    );
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert!(
        matches!(interpret(200, empty, "q", false).unwrap(), Answer::NoData(m) if m.contains("no series"))
    );
    let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
    assert!(
        matches!(interpret(200, nan, "q", false).unwrap(), Answer::NoData(m) if m.contains("NaN"))
    );
    let inf = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#;
    assert_eq!(
        interpret(200, inf, "q", false).unwrap(),
        Answer::Value(f64::INFINITY)
    );
    let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
    assert_eq!(
        interpret(200, scalar, "q", false).unwrap(),
        Answer::Value(2.0)
    );
    let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"slot":"a"},"value":[1,"1"]},{"metric":{"slot":"b"},"value":[1,"2"]}]}}"#;
    assert!(
        matches!(interpret(200, two, "q", false).unwrap_err(), PromError::Query(m) if m.contains("2 series") && m.contains("sum("))
    );
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(
        matches!(interpret(200, matrix, "x[1m]", false).unwrap_err(), PromError::Query(m) if m.contains("range"))
    );
}

#[test]
fn range_answers() {
    let m = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[100,"1"],[101.5,"NaN"],[103,"3.5"]]}]}}"#;
    assert_eq!(
        interpret(200, m, "q", true).unwrap(),
        Answer::Series(vec![(100_000, 1.0), (103_000, 3.5)])
    );
    let all_nan = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[100,"NaN"]]}]}}"#;
    assert!(matches!(
        interpret(200, all_nan, "q", true).unwrap(),
        Answer::NoData(_)
    ));
    let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(matches!(
        interpret(200, empty, "q", true).unwrap(),
        Answer::NoData(_)
    ));
}

#[test]
fn errors_are_classified() {
    let bad = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unexpected <EOF>"}"#;
    match interpret(400, bad, "sum(", false).unwrap_err() {
        PromError::Query(m) => assert!(
            m.contains("PromQL bad_data") && m.contains("parse error") && m.contains("sum("),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let timeout = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
    assert!(matches!(
        interpret(503, timeout, "q", false).unwrap_err(),
        PromError::Unavailable(_)
    ));
    assert!(
        matches!(interpret(502, "<html>bad gateway</html>", "q", false).unwrap_err(), PromError::Unavailable(m) if m.contains("502"))
    );
}
