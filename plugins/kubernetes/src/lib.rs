//! # kubernetes: roll out a Deployment on a Kubernetes cluster, Flagger's way
//!
//! From the app's Deployment `<app>` (in the cluster, or `[target.workload] manifest`) the
//! plugin manages `<app>-primary` (stable), uses `<app>` itself as the candidate (running
//! `artifact`, 0 replicas between rollouts) and the Services `<app>` (apex), `<app>-primary`
//! and `<app>-canary`; traffic moves through a router (`gateway-api`, `nginx` or `service`).
//! Every API call goes through the host's `dax:host/kube`, limited to what
//! `[plugins.NAME.grants.kube]` grants; the plugin never sees a credential.
//!
//! One module per concern: [`config`], [`api`] (the calls), [`workload`] (the objects),
//! [`readiness`], [`configrefs`] (ConfigMap/Secret copies), [`autoscaler`] (HPA),
//! [`routers`], and [`rollout`] (what each target call does).

pub mod api;
pub mod autoscaler;
pub mod config;
pub mod configrefs;
pub mod readiness;
pub mod rollout;
pub mod routers;
pub mod workload;

#[cfg(target_arch = "wasm32")]
mod guest {
    use crate::api::{Api, HostApi};
    use crate::config::{self, Config};
    use crate::rollout::{self, Rollout};
    use crate::routers;
    use dax_sdk::target::*;

    const SCHEMA: &str = include_str!("schema.json");

    struct Kubernetes;

    fn parse(config: &str) -> Result<Config, PluginError> {
        Config::parse(config).map_err(PluginError::InvalidConfig)
    }

    /// Run one target call with a fresh API handle; logs how many API requests it made and
    /// how long it took.
    fn with_api<T>(
        config: &str,
        call: &str,
        f: impl FnOnce(&mut dyn Api, &Config) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let cfg = parse(config)?;
        let mut api = HostApi::new(&cfg.namespace);
        let start = std::time::Instant::now();
        let out = f(&mut api, &cfg);
        // Read by the benchmark in tests/kubernetes_target.rs (see BENCHMARKS.md).
        log::debug(&format!(
            "{call}: {} API requests in {} ms",
            api.requests,
            start.elapsed().as_millis()
        ));
        out
    }

    impl PluginGuest for Kubernetes {
        fn describe() -> PluginInfo {
            info(
                "kubernetes",
                env!("CARGO_PKG_VERSION"),
                PluginRole::Target,
                "Kubernetes Deployments with Flagger's primary/canary model; Gateway API, NGINX Ingress or Service routing",
                SCHEMA,
            )
        }
        fn validate_config(config: String) -> Vec<ConfigProblem> {
            problems(config::problems(&config))
        }
    }

    impl Guest for Kubernetes {
        fn supported_traffic(config: String) -> Result<TrafficSupport, PluginError> {
            let s = routers::support(parse(&config)?.router);
            Ok(TrafficSupport {
                weights: s.weights,
                header_matches: s.header_matches,
                cookie_matches: s.cookie_matches,
                mirroring: s.mirroring,
                note: s.note,
            })
        }
        fn deploy(config: String, w: Workload) -> Result<(), PluginError> {
            let spec: serde_json::Value = serde_json::from_str(&w.spec).map_err(|e| {
                PluginError::InvalidInput(format!("[target.workload] is not a JSON object: {e}"))
            })?;
            if w.artifact.is_empty() {
                return Err(PluginError::InvalidInput(
                    "[deployment] artifact is empty: give the candidate's container image".into(),
                ));
            }
            let r = Rollout {
                app: &w.app,
                version: &w.version,
                artifact: &w.artifact,
                replicas: w.replicas,
                spec: &spec,
            };
            with_api(&config, "deploy", |api, cfg| rollout::deploy(api, cfg, &r))
        }
        fn set_traffic(
            config: String,
            app: String,
            split: TrafficSplit,
        ) -> Result<(), PluginError> {
            with_api(&config, "set-traffic", |api, cfg| {
                routers::set(api, cfg, &app, &split)
            })
        }
        fn scale(
            config: String,
            app: String,
            which: Slot,
            replicas: u32,
        ) -> Result<(), PluginError> {
            with_api(&config, "scale", |api, _| {
                rollout::scale(api, &app, which, replicas)
            })
        }
        fn status(config: String, app: String, which: Slot) -> Result<WorkloadStatus, PluginError> {
            with_api(&config, "status", |api, cfg| {
                let (o, version) = rollout::status(api, cfg, &app, which)?;
                Ok(WorkloadStatus {
                    desired: o.desired,
                    ready: o.ready,
                    updated: o.updated,
                    version,
                    message: o.message,
                })
            })
        }
        fn promote(config: String, app: String) -> Result<(), PluginError> {
            with_api(&config, "promote", |api, cfg| {
                rollout::promote(api, cfg, &app)
            })
        }
        fn rollback(config: String, app: String) -> Result<(), PluginError> {
            with_api(&config, "rollback", |api, cfg| {
                rollout::rollback(api, cfg, &app)
            })
        }
        fn finalize(config: String, app: String) -> Result<(), PluginError> {
            with_api(&config, "finalize", |api, cfg| {
                rollout::finalize(api, cfg, &app)
            })
        }
    }

    dax_sdk::export_target!(Kubernetes);
}
