//! NGINX Ingress: the app's Ingress sends to the apex Service `<app>` (the primary); a copy
//! `<app>-canary` sending to the Service `<app>-canary` carries the canary annotations
//! (`canary-weight`, `canary-by-header[-value|-pattern]`, `canary-by-cookie`). NGINX picks
//! the canary by header, then cookie, then weight, and knows one header and one cookie:
//! several A/B conditions (which must all hold) cannot be expressed, nor mirroring with a
//! percent.

use super::{as_regex, describe};
use crate::api::{Api, INGRESS};
use crate::config::Config;
use crate::workload::{canary_name, MANAGED_BY};
use dax_sdk::target::{MatchSource, PluginError, StringMatch, TrafficSplit};
use serde_json::{json, Map, Value};

const PREFIX: &str = "nginx.ingress.kubernetes.io/canary";

pub fn canary_ingress_name(app: &str) -> String {
    canary_name(app)
}

pub fn unsupported(split: &TrafficSplit) -> Option<String> {
    if split.mirror_percent > 0 {
        return Some(format!(
            "router \"nginx\" cannot mirror {}% of requests (NGINX Ingress has no canary mirroring); use router \"gateway-api\"",
            split.mirror_percent
        ));
    }
    if split.matches.len() > 1 {
        let all: Vec<String> = split.matches.iter().map(describe).collect();
        return Some(format!(
            "router \"nginx\" routes by one header or one cookie, not all of [{}]; use router \"gateway-api\"",
            all.join(", ")
        ));
    }
    match split.matches.first() {
        Some(m) if m.source == MatchSource::Cookie && !matches!(&m.value, StringMatch::Exact(v) if v == "always") => Some(format!(
            "router \"nginx\" sends a request to the canary when cookie {} is \"always\" (canary-by-cookie), \
             it cannot match {}; use exact \"always\" or router \"gateway-api\"",
            m.name,
            describe(m)
        )),
        _ => None,
    }
}

/// The canary Ingress for `split`, from the app's Ingress `user`.
pub fn canary_ingress(
    namespace: &str,
    app: &str,
    user: &Value,
    split: &TrafficSplit,
) -> Result<Value, String> {
    let user_name = user["metadata"]["name"].as_str().unwrap_or("?");
    let mut spec = user["spec"].clone();
    let mut rewired = 0;
    let mut rewire = |backend: &mut Value| {
        if backend["service"]["name"] == app {
            backend["service"]["name"] = json!(canary_name(app));
            rewired += 1;
        }
    };
    if spec.get("defaultBackend").is_some() {
        rewire(&mut spec["defaultBackend"]);
    }
    for rule in spec["rules"].as_array_mut().into_iter().flatten() {
        for path in rule["http"]["paths"].as_array_mut().into_iter().flatten() {
            rewire(&mut path["backend"]);
        }
    }
    if rewired == 0 {
        return Err(format!(
            "Ingress {user_name} sends no traffic to the Service `{app}`: point its backends at `{app}` \
             (the apex Service dax manages) so its canary copy can send to `{}`",
            canary_name(app)
        ));
    }
    let mut annotations = Map::new();
    for (k, v) in user["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if !k.starts_with(PREFIX) && k != "kubectl.kubernetes.io/last-applied-configuration" {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let mut set = |k: &str, v: String| annotations.insert(format!("{PREFIX}{k}"), Value::String(v));
    set("", "true".into());
    set("-weight", split.candidate_weight.min(100).to_string());
    set("-weight-total", "100".into());
    if let Some(m) = split.matches.first() {
        match (m.source, &m.value) {
            (MatchSource::Header, StringMatch::Exact(v)) => {
                set("-by-header", m.name.clone());
                set("-by-header-value", v.clone());
            }
            (MatchSource::Header, other) => {
                set("-by-header", m.name.clone());
                set("-by-header-pattern", as_regex(other));
            }
            (MatchSource::Cookie, _) => {
                set("-by-cookie", m.name.clone());
            }
        }
    }
    Ok(json!({
        "apiVersion": INGRESS.api_version,
        "kind": INGRESS.kind,
        "metadata": {
            "name": canary_ingress_name(app),
            "namespace": namespace,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            "annotations": annotations,
        },
        "spec": spec,
    }))
}

pub fn set(
    api: &mut dyn Api,
    cfg: &Config,
    app: &str,
    split: &TrafficSplit,
) -> Result<(), PluginError> {
    let name = cfg
        .nginx
        .as_ref()
        .and_then(|n| n.ingress.clone())
        .unwrap_or_else(|| app.to_string());
    let user = api.get(INGRESS, &name)?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "Ingress {name} not found in namespace {}: router \"nginx\" needs the app's Ingress (set `nginx.ingress` in the plugin's config)",
            api.namespace()
        ))
    })?;
    let canary =
        canary_ingress(api.namespace(), app, &user, split).map_err(PluginError::InvalidInput)?;
    api.apply(canary)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dax_sdk::target::RequestMatch;

    fn user() -> Value {
        json!({"metadata": {"name": "web", "annotations": {"kubernetes.io/ingress.class": "nginx", "nginx.ingress.kubernetes.io/canary-weight": "5"}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "cdn", "port": {"number": 80}}}}
        ]}}]}})
    }

    fn split(w: u8, matches: Vec<RequestMatch>, mirror: u8) -> TrafficSplit {
        TrafficSplit {
            candidate_weight: w,
            matches,
            mirror_percent: mirror,
        }
    }

    #[test]
    fn weight_annotations_on_a_copy_sending_to_the_canary_service() {
        let c = canary_ingress("shop", "web", &user(), &split(20, vec![], 0)).unwrap();
        assert_eq!(c["metadata"]["name"], "web-canary");
        let a = &c["metadata"]["annotations"];
        assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
        assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "20");
        assert_eq!(a["kubernetes.io/ingress.class"], "nginx");
        let paths = &c["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(paths[0]["backend"]["service"]["name"], "web-canary");
        assert_eq!(paths[1]["backend"]["service"]["name"], "cdn");
    }

    #[test]
    fn header_and_cookie_annotations() {
        let h = |v| RequestMatch {
            source: MatchSource::Header,
            name: "x-canary".into(),
            value: v,
        };
        let c = canary_ingress(
            "shop",
            "web",
            &user(),
            &split(0, vec![h(StringMatch::Exact("insider".into()))], 0),
        )
        .unwrap();
        assert_eq!(
            c["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-header-value"],
            "insider"
        );
        let c = canary_ingress(
            "shop",
            "web",
            &user(),
            &split(0, vec![h(StringMatch::Prefix("in".into()))], 0),
        )
        .unwrap();
        assert_eq!(
            c["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
            "^in.*"
        );
        let cookie = RequestMatch {
            source: MatchSource::Cookie,
            name: "beta".into(),
            value: StringMatch::Exact("always".into()),
        };
        let c = canary_ingress("shop", "web", &user(), &split(0, vec![cookie], 0)).unwrap();
        assert_eq!(
            c["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-cookie"],
            "beta"
        );
    }

    #[test]
    fn what_nginx_cannot_do_is_refused() {
        assert!(unsupported(&split(0, vec![], 10))
            .unwrap()
            .contains("cannot mirror 10%"));
        let h = RequestMatch {
            source: MatchSource::Header,
            name: "a".into(),
            value: StringMatch::Exact("1".into()),
        };
        assert!(unsupported(&split(0, vec![h.clone(), h.clone()], 0))
            .unwrap()
            .contains("one header or one cookie"));
        let c = RequestMatch {
            source: MatchSource::Cookie,
            name: "beta".into(),
            value: StringMatch::Exact("yes".into()),
        };
        assert!(unsupported(&split(0, vec![c], 0))
            .unwrap()
            .contains("is \"always\""));
        assert_eq!(unsupported(&split(50, vec![h], 0)), None);
        let mut u = user();
        u["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("other");
        assert!(canary_ingress("shop", "web", &u, &split(1, vec![], 0))
            .unwrap_err()
            .contains("sends no traffic to the Service `web`"));
    }
}
