//! Istio: a VirtualService `<app>` for the apex host sends to the hosts `<app>-primary` and
//! `<app>-canary` (Flagger's layout, so each Service keeps its own endpoints), with one
//! DestinationRule per host for the operator's traffic policy. Weights are the default
//! route's; A/B matches a first route whose `match` holds every condition (a cookie is a
//! regex on the `cookie` header); mirroring is `mirror` + `mirrorPercentage`.

use super::{as_regex, cookie_regex};
use crate::api::{DESTINATION_RULE, VIRTUAL_SERVICE};
use crate::config::Istio;
use crate::workload::{canary_name, primary_name, MANAGED_BY};
use dax_sdk::target::{MatchSource, StringMatch, TrafficSplit};
use serde_json::{json, Map, Value};

fn destination(host: String, weight: u8) -> Value {
    json!({ "destination": { "host": host }, "weight": weight })
}

/// A `StringMatch` of Istio's `HTTPMatchRequest.headers`.
fn string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(v) => json!({ "exact": v }),
        StringMatch::Prefix(v) => json!({ "prefix": v }),
        other => json!({ "regex": as_regex(other) }),
    }
}

/// The whole VirtualService for `split`.
pub fn virtual_service(namespace: &str, app: &str, istio: &Istio, split: &TrafficSplit) -> Value {
    let w = split.candidate_weight.min(100);
    let mut http = Vec::new();
    if !split.matches.is_empty() {
        let mut headers = Map::new();
        for m in &split.matches {
            let (name, value) = match m.source {
                // Istio wants header names lowercase.
                MatchSource::Header => (m.name.to_ascii_lowercase(), string_match(&m.value)),
                MatchSource::Cookie => (
                    "cookie".to_string(),
                    json!({ "regex": cookie_regex(&m.name, &m.value) }),
                ),
            };
            headers.insert(name, value);
        }
        http.push(json!({
            "match": [ { "headers": headers } ],
            "route": [ destination(primary_name(app), 0), destination(canary_name(app), 100) ],
        }));
    }
    let mut default = json!({
        "route": [ destination(primary_name(app), 100 - w), destination(canary_name(app), w) ],
    });
    if split.mirror_percent > 0 {
        default["mirror"] = json!({ "host": canary_name(app) });
        default["mirrorPercentage"] = json!({ "value": split.mirror_percent.min(100) });
    }
    http.push(default);
    let hosts = if istio.hosts.is_empty() {
        vec![app.to_string()]
    } else {
        istio.hosts.clone()
    };
    let mut spec = json!({ "hosts": hosts, "http": http });
    if !istio.gateways.is_empty() {
        spec["gateways"] = json!(istio.gateways);
    }
    json!({
        "apiVersion": VIRTUAL_SERVICE.api_version,
        "kind": VIRTUAL_SERVICE.kind,
        "metadata": { "name": app, "namespace": namespace, "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
        "spec": spec,
    })
}

/// The DestinationRules of the two hosts.
pub fn destination_rules(namespace: &str, app: &str) -> Vec<Value> {
    [primary_name(app), canary_name(app)]
        .into_iter()
        .map(|host| {
            json!({
                "apiVersion": DESTINATION_RULE.api_version,
                "kind": DESTINATION_RULE.kind,
                "metadata": { "name": host, "namespace": namespace, "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
                "spec": { "host": host },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dax_sdk::target::RequestMatch;

    #[test]
    fn weights_matches_and_mirror() {
        let istio = Istio {
            hosts: vec![],
            gateways: vec!["shop/gateway".into()],
        };
        let split = TrafficSplit {
            candidate_weight: 20,
            matches: vec![
                RequestMatch {
                    source: MatchSource::Header,
                    name: "X-Canary".into(),
                    value: StringMatch::Exact("insider".into()),
                },
                RequestMatch {
                    source: MatchSource::Cookie,
                    name: "beta".into(),
                    value: StringMatch::Exact("yes".into()),
                },
            ],
            mirror_percent: 10,
        };
        let vs = virtual_service("shop", "web", &istio, &split);
        assert_eq!(vs["spec"]["hosts"], json!(["web"]));
        assert_eq!(vs["spec"]["gateways"], json!(["shop/gateway"]));
        let http = &vs["spec"]["http"];
        assert_eq!(
            http[0]["match"],
            json!([{"headers": {"x-canary": {"exact": "insider"}, "cookie": {"regex": "^(.*;\\s*)?beta=yes(;.*)?$"}}}])
        );
        assert_eq!(
            http[0]["route"][1],
            json!({"destination": {"host": "web-canary"}, "weight": 100})
        );
        assert_eq!(
            http[1]["route"][0],
            json!({"destination": {"host": "web-primary"}, "weight": 80})
        );
        assert_eq!(http[1]["mirror"], json!({"host": "web-canary"}));
        assert_eq!(http[1]["mirrorPercentage"], json!({"value": 10}));
        let drs = destination_rules("shop", "web");
        assert_eq!(drs[1]["spec"]["host"], "web-canary");
    }
}
