//! Traffic between `<app>-primary` and the candidate `<app>`, one module per router (after
//! Flagger's `pkg/router`). Each says what it supports (`supported-traffic`), refuses a
//! split it cannot carry out with a message naming the router that could, and builds its
//! objects with pure functions; [`set`] and [`finalize`] do the I/O.

pub mod gateway_api;
pub mod istio;
pub mod nginx;
pub mod service;

use crate::api::Api;
use crate::config::{Config, RouterKind};
use dax_sdk::target::{MatchSource, PluginError, RequestMatch, StringMatch, TrafficSplit};

/// What a router can do (the `traffic-support` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    pub weights: bool,
    pub header_matches: bool,
    pub cookie_matches: bool,
    pub mirroring: bool,
    pub note: String,
}

pub fn support(router: RouterKind) -> Support {
    match router {
        RouterKind::GatewayApi => Support {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: true,
            note: "router \"gateway-api\": cookie matches become a regular-expression match on the Cookie header \
                   (Gateway API extended support)"
                .into(),
        },
        RouterKind::Nginx => Support {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: false,
            note: "router \"nginx\": one header or one cookie per A/B route (canary-by-header / canary-by-cookie; \
                   a cookie must equal \"always\"); no mirroring: use router \"gateway-api\" for mirroring"
                .into(),
        },
        RouterKind::Istio => Support {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: true,
            note: "router \"istio\": cookie matches become a regular-expression match on the cookie header".into(),
        },
        RouterKind::Service => Support {
            weights: false,
            header_matches: false,
            cookie_matches: false,
            mirroring: false,
            note: "router \"service\" only switches the apex Service's selector (0 or 100 percent): \
                   use router \"gateway-api\" or \"nginx\" for weights and A/B matches, \"gateway-api\" for mirroring"
                .into(),
        },
    }
}

/// Why `router` cannot carry out `split`, if it cannot.
pub fn unsupported(router: RouterKind, split: &TrafficSplit) -> Option<String> {
    match router {
        RouterKind::GatewayApi | RouterKind::Istio => None,
        RouterKind::Nginx => nginx::unsupported(split),
        RouterKind::Service => service::unsupported(split),
    }
}

/// Route `split` (already checked by [`unsupported`]).
pub fn set(
    api: &mut dyn Api,
    cfg: &Config,
    app: &str,
    split: &TrafficSplit,
) -> Result<(), PluginError> {
    if let Some(why) = unsupported(cfg.router, split) {
        return Err(PluginError::Unsupported(why));
    }
    match cfg.router {
        RouterKind::GatewayApi => {
            let gw = cfg.gateway_api.clone().unwrap_or_default();
            api.apply(gateway_api::route(
                api.namespace(),
                app,
                &gw,
                cfg.port,
                split,
            ))?;
        }
        RouterKind::Istio => {
            let istio = cfg.istio.clone().unwrap_or_default();
            api.apply(istio::virtual_service(api.namespace(), app, &istio, split))?;
        }
        RouterKind::Nginx => nginx::set(api, cfg, app, split)?,
        RouterKind::Service => service::set(api, cfg, app, split)?,
    }
    Ok(())
}

/// Objects a router needs once per rollout, before any traffic step (applied by `deploy`).
pub fn prepare(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    if cfg.router == RouterKind::Istio {
        for rule in istio::destination_rules(api.namespace(), app) {
            api.apply(rule)?;
        }
    }
    Ok(())
}

/// All traffic to the primary.
pub fn reset(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    set(api, cfg, app, &all_to_primary())
}

/// Remove what only a rollout needs, leaving all traffic on the primary.
pub fn finalize(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    match cfg.router {
        RouterKind::Nginx => {
            api.delete(crate::api::INGRESS, &nginx::canary_ingress_name(app))?;
            Ok(())
        }
        _ => reset(api, cfg, app),
    }
}

pub fn all_to_primary() -> TrafficSplit {
    TrafficSplit {
        candidate_weight: 0,
        matches: Vec::new(),
        mirror_percent: 0,
    }
}

/// `s` as an RE2 literal.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A string match as an RE2 pattern matching the whole value.
pub fn as_regex(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => format!("^{}$", regex_escape(v)),
        StringMatch::Prefix(v) => format!("^{}.*", regex_escape(v)),
        StringMatch::Suffix(v) => format!(".*{}$", regex_escape(v)),
        StringMatch::Regex(v) => v.clone(),
    }
}

/// A pattern for the `Cookie` header that holds when cookie `name` matches `m`.
pub fn cookie_regex(name: &str, m: &StringMatch) -> String {
    let value = match m {
        StringMatch::Exact(v) => regex_escape(v),
        StringMatch::Prefix(v) => format!("{}[^;]*", regex_escape(v)),
        StringMatch::Suffix(v) => format!("[^;]*{}", regex_escape(v)),
        StringMatch::Regex(v) => format!("(?:{})", v.trim_start_matches('^').trim_end_matches('$')),
    };
    format!("^(.*;\\s*)?{}={value}(;.*)?$", regex_escape(name))
}

pub fn describe(m: &RequestMatch) -> String {
    let source = match m.source {
        MatchSource::Header => "header",
        MatchSource::Cookie => "cookie",
    };
    let value = match &m.value {
        StringMatch::Exact(v) => format!("= {v:?}"),
        StringMatch::Prefix(v) => format!("starts with {v:?}"),
        StringMatch::Suffix(v) => format!("ends with {v:?}"),
        StringMatch::Regex(v) => format!("~ {v:?}"),
    };
    format!("{source} {} {value}", m.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_escape_literals() {
        assert_eq!(as_regex(&StringMatch::Exact("a.b".into())), "^a\\.b$");
        assert_eq!(as_regex(&StringMatch::Prefix("v1+".into())), "^v1\\+.*");
        assert_eq!(as_regex(&StringMatch::Suffix("x".into())), ".*x$");
        assert_eq!(
            cookie_regex("canary", &StringMatch::Exact("always".into())),
            "^(.*;\\s*)?canary=always(;.*)?$"
        );
    }

    #[test]
    fn each_router_says_what_it_cannot_do() {
        assert!(support(RouterKind::GatewayApi).mirroring);
        let s = support(RouterKind::Service);
        assert!(!s.weights && !s.header_matches && !s.mirroring);
        assert!(s.note.contains("use router \"gateway-api\""));
        assert!(!support(RouterKind::Nginx).mirroring);
    }
}
