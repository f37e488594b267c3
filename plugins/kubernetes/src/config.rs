//! The plugin's config (`[plugins.NAME.config]`), parsed and checked without any I/O.

use serde::Deserialize;

/// How traffic moves between `<app>-primary` and the candidate `<app>` (after Flagger's
/// `pkg/router`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouterKind {
    /// Gateway API `HTTPRoute` backendRef weights, header/cookie rules, `RequestMirror`.
    GatewayApi,
    /// NGINX Ingress canary annotations on a copy of the app's Ingress.
    Nginx,
    /// No router: the apex Service's selector switches between the two (blue-green).
    Service,
    /// Istio VirtualService weights, header/cookie matches and mirroring.
    Istio,
}

impl RouterKind {
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::GatewayApi => "gateway-api",
            RouterKind::Nginx => "nginx",
            RouterKind::Service => "service",
            RouterKind::Istio => "istio",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Namespace of the app's Deployment and of everything the plugin manages.
    pub namespace: String,
    #[serde(default = "default_router")]
    pub router: RouterKind,
    /// Port of the Services `<app>`, `<app>-primary` and `<app>-canary`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Container port the Services send to: a number or a port name. Default: the first
    /// port of the target container, else `port`.
    #[serde(default)]
    pub target_port: Option<serde_json::Value>,
    /// Container that runs `artifact`. Default: the pod's first container.
    #[serde(default)]
    pub container: Option<String>,
    /// Percent of updated replicas that must be available for a Deployment to count as
    /// ready (Flagger's `readyThreshold`).
    #[serde(default = "hundred")]
    pub ready_threshold: u8,
    /// Longest time `promote` waits for `<app>-primary` to finish rolling out. Must stay
    /// below the plugin's `limits.wall_timeout` (default 10s).
    #[serde(default = "default_promotion_timeout")]
    pub promotion_timeout: String,
    /// Copy the ConfigMaps and Secrets the pod spec references to `<name>-primary` for the
    /// primary (Flagger's config tracking). Needs `configmaps`/`secrets` in the grant.
    #[serde(default = "yes")]
    pub copy_config: bool,
    /// Mirror an HPA targeting `<app>` as `<hpa>-primary` targeting `<app>-primary`.
    /// Needs `autoscaling/horizontalpodautoscalers` in the grant.
    #[serde(default = "yes")]
    pub hpa: bool,
    /// `router = "gateway-api"` settings.
    #[serde(default)]
    pub gateway_api: Option<GatewayApi>,
    /// `router = "nginx"` settings.
    #[serde(default)]
    pub nginx: Option<Nginx>,
    /// `router = "istio"` settings.
    #[serde(default)]
    pub istio: Option<Istio>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Istio {
    /// `spec.hosts` of the VirtualService; default the apex Service `<app>`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `spec.gateways` (`namespace/name`, or `mesh`); default none (mesh traffic).
    #[serde(default)]
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayApi {
    /// Gateways the HTTPRoute attaches to (`spec.parentRefs`), e.g.
    /// `[{ name = "gateway", namespace = "infra" }]`.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// `spec.hostnames` of the HTTPRoute.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Name of the HTTPRoute; default `<app>`.
    #[serde(default)]
    pub route: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub section_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nginx {
    /// The app's Ingress (sending to the apex Service `<app>`); default `<app>`.
    #[serde(default)]
    pub ingress: Option<String>,
}

fn default_router() -> RouterKind {
    RouterKind::Service
}
fn default_port() -> u16 {
    80
}
fn hundred() -> u8 {
    100
}
fn yes() -> bool {
    true
}
fn default_promotion_timeout() -> String {
    "8s".into()
}

impl Config {
    pub fn parse(config: &str) -> Result<Config, String> {
        serde_json::from_str(config).map_err(|e| {
            format!("{e}; expected e.g. `config = {{ namespace = \"shop\", router = \"gateway-api\" }}`")
        })
    }

    /// `promotion_timeout` in milliseconds (checked by [`problems`]).
    pub fn promotion_timeout_ms(&self) -> u64 {
        parse_duration_ms(&self.promotion_timeout).unwrap_or(8_000)
    }
}

/// Every problem of a config, as `(field, message)`; no I/O.
pub fn problems(config: &str) -> Vec<(String, String)> {
    let cfg = match Config::parse(config) {
        Ok(c) => c,
        Err(e) => return vec![(String::new(), e)],
    };
    let mut out = Vec::new();
    if !is_dns_label(&cfg.namespace) {
        out.push((
            "namespace".into(),
            format!("`{}` is not a Kubernetes namespace name (lowercase letters, digits and `-`, at most 63)", cfg.namespace),
        ));
    }
    if cfg.port == 0 {
        out.push(("port".into(), "must be 1..=65535".into()));
    }
    match &cfg.target_port {
        None => {}
        Some(serde_json::Value::Number(n))
            if n.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 15 => {}
        Some(other) => out.push((
            "target_port".into(),
            format!("`{other}` is neither a port number (1..=65535) nor a container port name"),
        )),
    }
    if cfg.ready_threshold == 0 || cfg.ready_threshold > 100 {
        out.push((
            "ready_threshold".into(),
            "must be a percent in 1..=100".into(),
        ));
    }
    if parse_duration_ms(&cfg.promotion_timeout).is_none() {
        out.push((
            "promotion_timeout".into(),
            format!(
                "`{}` is not a duration like \"8s\" or \"2m\"",
                cfg.promotion_timeout
            ),
        ));
    }
    match cfg.router {
        RouterKind::GatewayApi => match &cfg.gateway_api {
            Some(g) if !g.parent_refs.is_empty() => {
                for (i, p) in g.parent_refs.iter().enumerate() {
                    if p.name.is_empty() {
                        out.push((
                            format!("gateway_api.parent_refs[{i}].name"),
                            "must not be empty".into(),
                        ));
                    }
                }
            }
            _ => out.push((
                "gateway_api.parent_refs".into(),
                "router \"gateway-api\" needs the Gateway to attach the HTTPRoute to, e.g. \
                 `gateway_api = { parent_refs = [{ name = \"gateway\" }] }`"
                    .into(),
            )),
        },
        _ if cfg.gateway_api.is_some() => out.push((
            "gateway_api".into(),
            format!(
                "only used with router \"gateway-api\" (router is \"{}\")",
                cfg.router.name()
            ),
        )),
        _ => {}
    }
    if cfg.istio.is_some() && cfg.router != RouterKind::Istio {
        out.push((
            "istio".into(),
            format!(
                "only used with router \"istio\" (router is \"{}\")",
                cfg.router.name()
            ),
        ));
    }
    if cfg.nginx.is_some() && cfg.router != RouterKind::Nginx {
        out.push((
            "nginx".into(),
            format!(
                "only used with router \"nginx\" (router is \"{}\")",
                cfg.router.name()
            ),
        ));
    }
    out
}

/// `"500ms"`, `"8s"`, `"2m"`, `"1h"` in milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A DNS-1123 label (namespace names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(config: &str) -> Vec<String> {
        problems(config).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn a_minimal_config_is_valid_and_uses_the_service_router() {
        assert!(problems(r#"{"namespace":"shop"}"#).is_empty());
        let cfg = Config::parse(r#"{"namespace":"shop"}"#).unwrap();
        assert_eq!(cfg.router, RouterKind::Service);
        assert_eq!(cfg.port, 80);
        assert_eq!(cfg.promotion_timeout_ms(), 8_000);
    }

    #[test]
    fn gateway_api_needs_a_parent_ref() {
        assert_eq!(
            fields(r#"{"namespace":"shop","router":"gateway-api"}"#),
            ["gateway_api.parent_refs"]
        );
        assert!(problems(r#"{"namespace":"shop","router":"gateway-api","gateway_api":{"parent_refs":[{"name":"gw"}]}}"#).is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            fields(
                r#"{"namespace":"Shop","ready_threshold":0,"promotion_timeout":"soon","target_port":0,"nginx":{}}"#
            ),
            [
                "namespace",
                "target_port",
                "ready_threshold",
                "promotion_timeout",
                "nginx"
            ]
        );
        let typo = problems(r#"{"namespace":"shop","routr":"nginx"}"#);
        assert!(typo[0].1.contains("unknown field `routr`"), "{typo:?}");
        let router = problems(r#"{"namespace":"shop","router":"linkerd"}"#);
        assert!(
            router[0].1.contains("unknown variant `linkerd`"),
            "{router:?}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("2"), None);
        assert_eq!(parse_duration_ms("s"), None);
    }
}
