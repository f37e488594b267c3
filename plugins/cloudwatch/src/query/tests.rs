use super::*;

fn cfg() -> Config {
    Config {
        load_balancer: Some("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/50dc6c495c0c9188".into()),
        candidate_target_group: Some("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-green/943f017f100becff".into()),
        stable_target_group: Some("targetgroup/web-blue/6d0ecf831eec9f09".into()),
        ..Config::default()
    }
}

// 2026-11-30T08:01:20Z
const NOW_MS: u64 = 1_796_025_680_000;

#[test]
fn timestamps_round_trip() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso8601(NOW_MS / 1000), "2026-11-30T08:01:20Z");
    assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(parse_iso8601("2026-11-30T08:01:20Z"), Some(NOW_MS));
    assert_eq!(parse_iso8601("2026-11-30T08:01:20.5Z"), Some(NOW_MS + 500));
    assert_eq!(
        parse_iso8601("2026-11-30T08:01:20.123456+00:00"),
        Some(NOW_MS + 123)
    );
    for bad in [
        "",
        "2026-11-30",
        "2026-13-30T08:01:20Z",
        "2026-11-30T08:01:20+02:00",
        "x026-11-30T08:01:20Z",
    ] {
        assert_eq!(parse_iso8601(bad), None, "{bad}");
    }
}

#[test]
fn windows_are_whole_minutes_ending_after_now() {
    // Instant: one period as long as the window rounded up to minutes, ending at the next minute.
    let w = window(NOW_MS, 10_000, 0, false);
    assert_eq!(
        (
            iso8601(w.start_s).as_str(),
            iso8601(w.end_s).as_str(),
            w.period_s
        ),
        ("2026-11-30T08:01:00Z", "2026-11-30T08:02:00Z", 60)
    );
    let w = window(NOW_MS, 150_000, 0, false);
    assert_eq!((w.end_s - w.start_s, w.period_s), (180, 180));
    // Exactly on a minute: the minute that just began is still in.
    let w = window(NOW_MS - 20_000, 60_000, 0, false);
    assert_eq!(iso8601(w.end_s), "2026-11-30T08:02:00Z");
    // Range: periods of the step (at least a minute) covering the window.
    let w = window(NOW_MS, 300_000, 1_000, true);
    assert_eq!((w.end_s - w.start_s, w.period_s), (300, 60));
    let w = window(NOW_MS, 600_000, 90_000, true);
    assert_eq!((w.end_s - w.start_s, w.period_s), (600, 120));
    // A long window is not asked for in more than 1440 points.
    let w = window(NOW_MS, 30 * 86_400_000, 0, true);
    assert!(
        (w.end_s - w.start_s) / w.period_s <= 1440 && w.period_s.is_multiple_of(60),
        "{w:?}"
    );
}

#[test]
fn builtins_name_the_alb_dimensions_and_slot() {
    let p = plan("request-success-rate", &cfg(), "candidate", 60).unwrap();
    assert_eq!(
        p.compute,
        Compute::SuccessRate {
            errors: "errors".into(),
            requests: "requests".into()
        }
    );
    let dims = &p.queries[0]["MetricStat"]["Metric"]["Dimensions"];
    assert_eq!(dims[0]["Value"], "app/web/50dc6c495c0c9188");
    assert_eq!(dims[1]["Value"], "targetgroup/web-green/943f017f100becff");
    assert_eq!(
        p.queries[0]["MetricStat"]["Metric"]["MetricName"],
        "HTTPCode_Target_5XX_Count"
    );
    assert_eq!(
        p.queries[1]["MetricStat"]["Metric"]["MetricName"],
        "RequestCount"
    );
    let p = plan("request-success-rate", &cfg(), "stable", 60).unwrap();
    assert_eq!(
        p.queries[0]["MetricStat"]["Metric"]["Dimensions"][1]["Value"],
        "targetgroup/web-blue/6d0ecf831eec9f09"
    );

    let p = plan("request-duration", &cfg(), "candidate", 120).unwrap();
    assert_eq!(p.queries[0]["MetricStat"]["Stat"], "p99");
    assert_eq!(p.queries[0]["MetricStat"]["Period"], 120);
    assert_eq!(
        p.compute,
        Compute::Returned {
            id: "duration".into(),
            scale: 1000.0
        }
    );
    let p = plan(
        "request-duration stat=Average target_group=targetgroup/x/1",
        &cfg(),
        "candidate",
        60,
    )
    .unwrap();
    assert_eq!(p.queries[0]["MetricStat"]["Stat"], "Average");
    assert_eq!(
        p.queries[0]["MetricStat"]["Metric"]["Dimensions"][1]["Value"],
        "targetgroup/x/1"
    );

    let err = plan("request-success-rate stat=p99", &cfg(), "candidate", 60).unwrap_err();
    assert!(
        matches!(&err, QueryError::Query(m) if m.contains("takes no argument `stat`")),
        "{err:?}"
    );
    let err = plan("request-success-rate", &Config::default(), "candidate", 60).unwrap_err();
    assert!(
        matches!(&err, QueryError::Config(m) if m.contains("set `candidate_target_group`")),
        "{err:?}"
    );
    let err = plan(
        "request-success-rate",
        &Config {
            load_balancer: None,
            ..cfg()
        },
        "candidate",
        60,
    )
    .unwrap_err();
    assert!(
        matches!(&err, QueryError::Config(m) if m.contains("set `load_balancer`")),
        "{err:?}"
    );
}

#[test]
fn json_queries_get_ids_periods_and_one_returned_result() {
    let p = plan(
        r#"[{"Id":"e","MetricStat":{"Metric":{"Namespace":"N","MetricName":"E"},"Stat":"Sum"},"ReturnData":false},
            {"Id":"r","Namespace":"N","MetricName":"R","Dimensions":{"A":"b"},"Stat":"Sum","Period":300,"ReturnData":false},
            {"Id":"rate","Expression":"100*e/r"}]"#,
        &cfg(),
        "candidate",
        60,
    )
    .unwrap();
    assert_eq!(
        p.compute,
        Compute::Returned {
            id: "rate".into(),
            scale: 1.0
        }
    );
    assert_eq!(p.queries[0]["MetricStat"]["Period"], 60);
    assert_eq!(p.queries[1]["MetricStat"]["Period"], 300);
    assert_eq!(
        p.queries[1]["MetricStat"]["Metric"]["Dimensions"],
        json!([{"Name": "A", "Value": "b"}])
    );
    assert_eq!(p.queries[2]["Period"], 60);

    let one = plan(
        r#"{"Namespace":"N","MetricName":"M","Stat":"Maximum"}"#,
        &cfg(),
        "candidate",
        60,
    )
    .unwrap();
    assert_eq!(
        one.compute,
        Compute::Returned {
            id: "q1".into(),
            scale: 1.0
        }
    );

    for (text, wanted) in [
        (
            r#"[{"Id":"a","Expression":"1"},{"Id":"b","Expression":"2"}]"#,
            "set \"ReturnData\": false on all but one",
        ),
        (
            r#"[{"Id":"a","Expression":"1","ReturnData":false}]"#,
            "one must return",
        ),
        (
            r#"{"Id":"a","Expression":"1","Period":61}"#,
            "Period 61 is not one CloudWatch takes",
        ),
        (
            r#"{"Id":"Bad","Expression":"1"}"#,
            "must start with a lowercase letter",
        ),
        (r#"{"Id":"a"}"#, "has neither"),
        (r#"{"Namespace":"N","MetricName":"M"}"#, "`Stat` is missing"),
        (r#"[{"Id":"#, "looks like JSON but is not"),
        ("   ", "the query is empty"),
    ] {
        match plan(text, &cfg(), "candidate", 60) {
            Err(QueryError::Query(m)) => assert!(m.contains(wanted), "{text}: {m}"),
            other => panic!("{text}: {other:?}"),
        }
    }

    let expr = plan(
        "SEARCH('{AWS/ApplicationELB,LoadBalancer} RequestCount', 'Sum')",
        &cfg(),
        "candidate",
        60,
    )
    .unwrap();
    assert_eq!(
        expr.queries[0]["Expression"],
        "SEARCH('{AWS/ApplicationELB,LoadBalancer} RequestCount', 'Sum')"
    );
}

#[test]
fn params_are_the_query_protocol_form() {
    let p = plan("request-duration stat=Average", &cfg(), "candidate", 60).unwrap();
    let w = window(NOW_MS, 60_000, 0, false);
    let params = params(&p, &w, Some("tok"));
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("MetricDataQueries.member.1.Id"), Some("duration"));
    assert_eq!(
        get("MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.2.Name"),
        Some("TargetGroup")
    );
    assert_eq!(
        get("MetricDataQueries.member.1.MetricStat.Period"),
        Some("60")
    );
    assert_eq!(get("MetricDataQueries.member.1.ReturnData"), Some("true"));
    assert_eq!(get("StartTime"), Some("2026-11-30T08:01:00Z"));
    assert_eq!(get("EndTime"), Some("2026-11-30T08:02:00Z"));
    assert_eq!(get("NextToken"), Some("tok"));
}

fn answer(results: &str) -> String {
    format!(
        r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults>{results}</MetricDataResults><Messages/></GetMetricDataResult></GetMetricDataResponse>"#
    )
}

fn result(id: &str, points: &[(&str, &str)]) -> String {
    let ts: String = points
        .iter()
        .map(|(t, _)| format!("<member>{t}</member>"))
        .collect();
    let vs: String = points
        .iter()
        .map(|(_, v)| format!("<member>{v}</member>"))
        .collect();
    format!("<member><Id>{id}</Id><Label>{id}</Label><Timestamps>{ts}</Timestamps><Values>{vs}</Values><StatusCode>Complete</StatusCode></member>")
}

fn run(p: &Plan, xml: &str, range: bool) -> Answer {
    let mut results = BTreeMap::new();
    let page = read_page(xml, &mut results).unwrap();
    interpret(
        p,
        &results,
        &window(NOW_MS, 120_000, 0, range),
        range,
        &page.messages,
    )
    .unwrap()
}

#[test]
fn success_rate_counts_a_minute_without_5xx_as_no_errors_and_no_requests_as_no_data() {
    let p = plan("request-success-rate", &cfg(), "candidate", 60).unwrap();
    let t1 = "2026-11-30T08:00:00Z";
    let t2 = "2026-11-30T08:01:00Z";
    let xml = answer(
        &(result("errors", &[(t1, "5.0")]) + &result("requests", &[(t1, "100.0"), (t2, "50.0")])),
    );
    assert_eq!(run(&p, &xml, false), Answer::Value(100.0));
    assert_eq!(
        run(&p, &xml, true),
        Answer::Series(vec![(NOW_MS - 80_000, 95.0), (NOW_MS - 20_000, 100.0)])
    );
    // No requests at all, or only minutes with 0 requests: no data, not 100 and not 0.
    let none = answer(&(result("errors", &[]) + &result("requests", &[(t1, "0")])));
    match run(&p, &none, false) {
        Answer::NoData(why) => assert!(
            why.contains("no datapoints for requests to targetgroup/web-green/943f017f100becff"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn returned_values_are_scaled_and_missing_results_are_errors() {
    let p = plan("request-duration", &cfg(), "candidate", 60).unwrap();
    let xml = answer(&result("duration", &[("2026-11-30T08:01:00Z", "0.25")]));
    assert_eq!(run(&p, &xml, false), Answer::Value(250.0));
    let mut results = BTreeMap::new();
    read_page(&answer(""), &mut results).unwrap();
    let err = interpret(&p, &results, &window(NOW_MS, 60_000, 0, false), false, &[]).unwrap_err();
    assert!(err.contains("no result for query `duration`"), "{err}");
    // Pages add up; the next token is read.
    let mut results = BTreeMap::new();
    let page = read_page(
        &answer(&result("duration", &[("2026-11-30T08:00:00Z", "1")])).replace("<Messages/>", "<NextToken>abc</NextToken><Messages><member><Code>MaxQueryTimeRangeExceeded</Code><Value>too long</Value></member></Messages>"),
        &mut results,
    )
    .unwrap();
    assert_eq!(page.next_token.as_deref(), Some("abc"));
    assert_eq!(page.messages, vec!["MaxQueryTimeRangeExceeded: too long"]);
    read_page(
        &answer(&result("duration", &[("2026-11-30T08:01:00Z", "2")])),
        &mut results,
    )
    .unwrap();
    assert_eq!(results["duration"].points.len(), 2);
    assert!(read_page("<html>oops</html>", &mut results)
        .unwrap_err()
        .contains("not a GetMetricData answer"));
    assert!(
        read_page(&answer(&result("d", &[("yesterday", "1")])), &mut results)
            .unwrap_err()
            .contains("not a timestamp")
    );
}

#[test]
fn load_balancers_are_read_from_arns_listeners_and_dimensions() {
    for given in [
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/dax-web/0123456789abcdef",
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/dax-web/0123456789abcdef/fedcba9876543210",
        "app/dax-web/0123456789abcdef",
    ] {
        assert_eq!(load_balancer_dimension(given).unwrap(), "app/dax-web/0123456789abcdef", "{given}");
    }
    for bad in [
        "arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/net/x/1",
        "app/x",
        "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/x",
    ] {
        assert!(load_balancer_dimension(bad).is_err(), "{bad}");
    }
    assert_eq!(
        target_group_dimension("arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/g/2").unwrap(),
        "targetgroup/g/2"
    );
}

#[test]
fn configs_are_checked_field_by_field() {
    assert!(config_problems("{}").is_empty());
    assert!(config_problems(r#"{"region":"eu-west-1","load_balancer":"app/web/1","candidate_target_group":"targetgroup/g/2","duration_stat":"p99.9"}"#).is_empty());
    let problems = config_problems(
        r#"{"region":"EU","load_balancer":"net/x/1","candidate_target_group":"tg","duration_stat":"p 99"}"#,
    );
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "region",
            "load_balancer",
            "candidate_target_group",
            "duration_stat"
        ]
    );
    assert!(
        problems[1].1.contains("not an Application Load Balancer"),
        "{problems:?}"
    );
    let typo = config_problems(r#"{"target_group":"x"}"#);
    assert!(
        typo[0].1.contains("unknown field `target_group`"),
        "{typo:?}"
    );
}
