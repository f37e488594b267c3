//! `builtin:ecs`: canary, blue-green and A/B rollouts of an ECS service behind an
//! Application Load Balancer, through the host's `dax:host/aws` capability.
//!
//! Model: two services. The stable service (the deployment's `app`) is registered in
//! `stable_target_group_arn`; the candidate runs as a second service `<app>-candidate` from a
//! new revision of the stable task definition (the new image from `artifact`), registered in
//! `candidate_target_group_arn`. Traffic moves by the weights of the listener's default
//! forward action (`ForwardConfig.TargetGroups`); A/B sends requests matching headers (and
//! cookies, through the `Cookie` header) to the candidate with one listener rule the plugin
//! owns (`ab_rule_priority`). Promotion rolls the stable service onto the candidate's task
//! definition, sends it all traffic and deletes the candidate; rollback sends all traffic to
//! stable and deletes the candidate. Every call is idempotent.
//!
//! Why two services rather than task sets: it works with the ECS deployment controller users
//! already have (task sets need the `EXTERNAL` controller, chosen when a service is created),
//! each service keeps ECS's own scheduling, health checks and circuit breaker, and readiness
//! comes from the service's running/desired/pending counts and its target group's health.
//!
//! `mode = "rolling"` (rolling.rs) instead rolls the stable service itself onto the new
//! revision through ECS's own deployment, for users who only want dax's analysis and gate.

#[cfg(target_arch = "wasm32")]
mod api;
pub mod plan;
#[cfg(target_arch = "wasm32")]
mod rolling;
pub use query_xml as xml;

// The component's exports (only in the Wasm build: natively, the crate is its unit tests).
#[cfg(target_arch = "wasm32")]
mod guest {
    use super::api::Api;
    use super::plan::{self, Config, Mode};
    use dax_sdk::target::*;

    struct Ecs;

    impl PluginGuest for Ecs {
        fn describe() -> PluginInfo {
            info(
                "ecs",
                env!("CARGO_PKG_VERSION"),
                PluginRole::Target,
                "Canary, blue-green and A/B rollouts of an ECS service behind an Application Load Balancer",
                plan::CONFIG_SCHEMA,
            )
        }
        fn validate_config(config: String) -> Vec<ConfigProblem> {
            match Config::parse(&config) {
                Ok(_) => Vec::new(),
                Err((field, message)) => vec![ConfigProblem { field, message }],
            }
        }
    }

    fn config(text: &str) -> Result<Config, PluginError> {
        Config::parse(text)
            .map_err(|(field, message)| PluginError::InvalidConfig(format!("{field}: {message}")))
    }

    impl Guest for Ecs {
        fn supported_traffic(config_text: String) -> Result<TrafficSupport, PluginError> {
            if config(&config_text)?.mode == Mode::Rolling {
                return Ok(super::rolling::traffic_support());
            }
            Ok(TrafficSupport {
                weights: true,
                header_matches: true,
                cookie_matches: true,
                mirroring: false,
                note: "an Application Load Balancer cannot mirror requests: use weights or header/cookie matches".into(),
            })
        }

        fn deploy(config_text: String, w: Workload) -> Result<(), PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                return super::rolling::deploy(&c, &w);
            }
            let api = Api::new(&c);
            let stable = api.service(&w.app)?.ok_or_else(|| {
                PluginError::NotFound(format!(
                    "no ECS service `{}` in cluster `{}`: create the stable service first",
                    w.app, c.cluster
                ))
            })?;
            let candidate_name = plan::candidate_name(&w.app);
            let stable_td = api.task_definition(plan::str_of(&stable, "taskDefinition"))?;
            // Resume: a candidate already running this version only needs its count.
            if let Some(existing) = api.service(&candidate_name)? {
                let td = api.task_definition(plan::str_of(&existing, "taskDefinition"))?;
                if plan::version_of(&td) == w.version
                    && plan::str_of(&existing, "status") == "ACTIVE"
                {
                    return api.update_service(&candidate_name, None, Some(w.replicas));
                }
            }
            let register = plan::new_revision(&stable_td, &c, &w.artifact, &w.version)
                .map_err(PluginError::InvalidInput)?;
            let td_arn = api.register_task_definition(&register)?;
            match api.service(&candidate_name)? {
                Some(existing) if plan::str_of(&existing, "status") == "ACTIVE" => {
                    api.update_service(&candidate_name, Some(&td_arn), Some(w.replicas))
                }
                _ => {
                    let create =
                        plan::candidate_service(&stable, &c, &candidate_name, &td_arn, w.replicas);
                    api.create_service(&create)
                }
            }
        }

        fn set_traffic(
            config_text: String,
            app: String,
            split: TrafficSplit,
        ) -> Result<(), PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                return super::rolling::set_traffic(&split);
            }
            if split.candidate_weight > 100 {
                return Err(PluginError::InvalidInput(format!(
                    "candidate weight {} is above 100",
                    split.candidate_weight
                )));
            }
            if split.mirror_percent > 0 {
                return Err(PluginError::Unsupported(
                    "an Application Load Balancer cannot mirror requests".into(),
                ));
            }
            let _ = app;
            let api = Api::new(&c);
            if split.matches.is_empty() {
                api.remove_ab_rule()?;
            } else {
                let conditions =
                    plan::rule_conditions(&split.matches).map_err(PluginError::Unsupported)?;
                api.put_ab_rule(&conditions)?;
            }
            api.set_weights(100 - split.candidate_weight, split.candidate_weight)
        }

        fn scale(
            config_text: String,
            app: String,
            which: Slot,
            replicas: u32,
        ) -> Result<(), PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                // ECS sizes its own deployment (minimum_healthy_percent / maximum_percent).
                let _ = (which, replicas);
                return Ok(());
            }
            let name = plan::service_name(&app, which);
            let api = Api::new(&c);
            match api.service(&name)? {
                Some(_) => api.update_service(&name, None, Some(replicas)),
                None if replicas == 0 => Ok(()),
                None => Err(PluginError::NotFound(format!(
                    "no ECS service `{name}` to scale"
                ))),
            }
        }

        fn status(
            config_text: String,
            app: String,
            which: Slot,
        ) -> Result<WorkloadStatus, PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                return super::rolling::status(&c, &app, which);
            }
            let api = Api::new(&c);
            let name = plan::service_name(&app, which);
            let Some(service) = api.service(&name)? else {
                return Ok(WorkloadStatus {
                    desired: 0,
                    ready: 0,
                    updated: 0,
                    version: String::new(),
                    message: format!("no service {name}"),
                });
            };
            let td = api.task_definition(plan::str_of(&service, "taskDefinition"))?;
            let group = match which {
                Slot::Stable => &c.stable_target_group_arn,
                Slot::Candidate => &c.candidate_target_group_arn,
            };
            let health = api.target_health(group)?;
            Ok(plan::readiness(&service, &health, plan::version_of(&td)))
        }

        fn promote(config_text: String, app: String) -> Result<(), PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                return super::rolling::promote(&c, &app);
            }
            let api = Api::new(&c);
            let candidate_name = plan::candidate_name(&app);
            if let Some(candidate) = api.service(&candidate_name)? {
                if plan::str_of(&candidate, "status") == "ACTIVE" {
                    // The stable service rolls onto the candidate's revision (ECS keeps old tasks
                    // serving until new ones are healthy), keeping at least the candidate's count.
                    let stable = api
                        .service(&app)?
                        .ok_or_else(|| PluginError::NotFound(format!("no ECS service `{app}`")))?;
                    let count = plan::count(&stable, "desiredCount")
                        .max(plan::count(&candidate, "desiredCount"));
                    api.update_service(
                        &app,
                        Some(plan::str_of(&candidate, "taskDefinition")),
                        Some(count),
                    )?;
                }
            }
            api.set_weights(100, 0)?;
            api.remove_ab_rule()?;
            api.delete_service(&candidate_name)
        }

        fn rollback(config_text: String, app: String) -> Result<(), PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                return super::rolling::rollback(&c, &app);
            }
            let api = Api::new(&c);
            api.set_weights(100, 0)?;
            api.remove_ab_rule()?;
            api.delete_service(&plan::candidate_name(&app))
        }

        fn finalize(config_text: String, _app: String) -> Result<(), PluginError> {
            let c = config(&config_text)?;
            if c.mode == Mode::Rolling {
                return Ok(());
            }
            Api::new(&c).remove_ab_rule()
        }
    }

    dax_sdk::export_target!(Ecs);
}
