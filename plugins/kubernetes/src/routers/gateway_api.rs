//! Gateway API: one `HTTPRoute` `<app>` attached to the configured Gateway(s). Weights are
//! the `backendRefs` weights of its default rule; A/B matches become a first rule sending
//! matching requests to the candidate (a rule with header matches takes precedence over
//! one without); mirroring is a `RequestMirror` filter with `percent` on the default rule.

use super::{as_regex, cookie_regex};
use crate::api::HTTP_ROUTE;
use crate::config::GatewayApi;
use crate::workload::{canary_name, primary_name, MANAGED_BY};
use dax_sdk::target::{MatchSource, StringMatch, TrafficSplit};
use serde_json::{json, Value};

pub fn route_name(app: &str, gw: &GatewayApi) -> String {
    gw.route.clone().unwrap_or_else(|| app.to_string())
}

fn backend(name: String, port: u16, weight: u8) -> Value {
    json!({ "name": name, "port": port, "weight": weight })
}

/// One `HTTPHeaderMatch` for a request match.
fn header_match(source: MatchSource, name: &str, value: &StringMatch) -> Value {
    match (source, value) {
        (MatchSource::Header, StringMatch::Exact(v)) => {
            json!({ "type": "Exact", "name": name, "value": v })
        }
        (MatchSource::Header, m) => {
            json!({ "type": "RegularExpression", "name": name, "value": as_regex(m) })
        }
        (MatchSource::Cookie, m) => {
            json!({ "type": "RegularExpression", "name": "Cookie", "value": cookie_regex(name, m) })
        }
    }
}

/// The whole HTTPRoute for `split`.
pub fn route(
    namespace: &str,
    app: &str,
    gw: &GatewayApi,
    port: u16,
    split: &TrafficSplit,
) -> Value {
    let w = split.candidate_weight.min(100);
    let mut rules = Vec::new();
    if !split.matches.is_empty() {
        let headers: Vec<Value> = split
            .matches
            .iter()
            .map(|m| header_match(m.source, &m.name, &m.value))
            .collect();
        rules.push(json!({
            "matches": [ { "headers": headers } ],
            "backendRefs": [ backend(primary_name(app), port, 0), backend(canary_name(app), port, 100) ],
        }));
    }
    let mut default = json!({
        "backendRefs": [ backend(primary_name(app), port, 100 - w), backend(canary_name(app), port, w) ],
    });
    if split.mirror_percent > 0 {
        default["filters"] = json!([{
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": { "name": canary_name(app), "port": port },
                "percent": split.mirror_percent.min(100),
            },
        }]);
    }
    rules.push(default);
    let parent_refs: Vec<Value> = gw
        .parent_refs
        .iter()
        .map(|p| {
            let mut r = json!({ "name": p.name });
            if let Some(ns) = &p.namespace {
                r["namespace"] = json!(ns);
            }
            if let Some(s) = &p.section_name {
                r["sectionName"] = json!(s);
            }
            r
        })
        .collect();
    let mut spec = json!({ "parentRefs": parent_refs, "rules": rules });
    if !gw.hostnames.is_empty() {
        spec["hostnames"] = json!(gw.hostnames);
    }
    json!({
        "apiVersion": HTTP_ROUTE.api_version,
        "kind": HTTP_ROUTE.kind,
        "metadata": { "name": route_name(app, gw), "namespace": namespace, "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParentRef;
    use dax_sdk::target::RequestMatch;

    fn gw() -> GatewayApi {
        GatewayApi {
            parent_refs: vec![ParentRef {
                name: "gateway".into(),
                namespace: Some("infra".into()),
                section_name: None,
            }],
            hostnames: vec!["shop.example.com".into()],
            route: None,
        }
    }

    #[test]
    fn weights_go_to_the_backend_refs() {
        let r = route(
            "shop",
            "web",
            &gw(),
            80,
            &TrafficSplit {
                candidate_weight: 30,
                matches: vec![],
                mirror_percent: 0,
            },
        );
        assert_eq!(r["metadata"]["name"], "web");
        assert_eq!(
            r["spec"]["parentRefs"],
            json!([{"name": "gateway", "namespace": "infra"}])
        );
        assert_eq!(r["spec"]["hostnames"], json!(["shop.example.com"]));
        assert_eq!(
            r["spec"]["rules"],
            json!([{"backendRefs": [{"name": "web-primary", "port": 80, "weight": 70}, {"name": "web-canary", "port": 80, "weight": 30}]}])
        );
    }

    #[test]
    fn matches_become_a_rule_before_the_default_one() {
        let split = TrafficSplit {
            candidate_weight: 0,
            matches: vec![
                RequestMatch {
                    source: MatchSource::Header,
                    name: "x-canary".into(),
                    value: StringMatch::Exact("insider".into()),
                },
                RequestMatch {
                    source: MatchSource::Header,
                    name: "user-agent".into(),
                    value: StringMatch::Regex(".*Firefox.*".into()),
                },
                RequestMatch {
                    source: MatchSource::Cookie,
                    name: "canary".into(),
                    value: StringMatch::Exact("always".into()),
                },
            ],
            mirror_percent: 0,
        };
        let r = route("shop", "web", &gw(), 80, &split);
        let rules = r["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"],
            json!([{"headers": [
                {"type": "Exact", "name": "x-canary", "value": "insider"},
                {"type": "RegularExpression", "name": "user-agent", "value": ".*Firefox.*"},
                {"type": "RegularExpression", "name": "Cookie", "value": "^(.*;\\s*)?canary=always(;.*)?$"}
            ]}])
        );
        assert_eq!(
            rules[0]["backendRefs"][1],
            json!({"name": "web-canary", "port": 80, "weight": 100})
        );
        assert_eq!(rules[1]["backendRefs"][0]["weight"], 100);
    }

    #[test]
    fn mirroring_is_a_request_mirror_filter_with_percent() {
        let r = route(
            "shop",
            "web",
            &gw(),
            8080,
            &TrafficSplit {
                candidate_weight: 0,
                matches: vec![],
                mirror_percent: 25,
            },
        );
        assert_eq!(
            r["spec"]["rules"][0]["filters"],
            json!([{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-canary", "port": 8080}, "percent": 25}}])
        );
    }
}
