//! The ECS target plugin (`plugins/ecs`) against moto: an ECS service behind an ALB set up
//! through the AWS API, then the plugin driven call by call (and by `dax deploy`), with the
//! listener's weights, its rules and the ECS services read back from the API at every step.
//!
//! What moto 5.2 cannot show (measured): target health (ECS services register no targets,
//! so readiness is the service's running count), task-set counts, and range checks on
//! weights. Those are covered by the plugin's unit tests (plugins/ecs/src/plan.rs).
//! Skipped locally when the moto venv is missing; a failure under `CI=true`.

use dax::contract::{MatchSource, RequestMatch, Slot, StringMatch, Target, TrafficSplit, Workload};
use dax::plugin::PluginSpec;
use dax_tests::moto::{Moto, REGION};
use dax_tests::{dax_bin, fresh_host, plugin_path, spec};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// VPC, two subnets, a security group, an ALB with a listener forwarding to `web-blue`, a
/// second target group `web-green`, cluster `prod`, task definition `web:1` (image v1) and
/// service `web` (2 tasks) in `web-blue`.
const SETUP: &str = r#"
ec2 = client('ec2'); elb = client('elbv2'); ecs = client('ecs')
vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
s1 = ec2.create_subnet(VpcId=vpc, CidrBlock='10.0.1.0/24', AvailabilityZone='us-east-1a')['Subnet']['SubnetId']
s2 = ec2.create_subnet(VpcId=vpc, CidrBlock='10.0.2.0/24', AvailabilityZone='us-east-1b')['Subnet']['SubnetId']
sg = ec2.create_security_group(GroupName='web', Description='web', VpcId=vpc)['GroupId']
lb = elb.create_load_balancer(Name='web', Subnets=[s1, s2], Type='application', Scheme='internet-facing')['LoadBalancers'][0]['LoadBalancerArn']
tg = lambda n: elb.create_target_group(Name=n, Protocol='HTTP', Port=8080, VpcId=vpc, TargetType='ip')['TargetGroups'][0]['TargetGroupArn']
blue, green = tg('web-blue'), tg('web-green')
listener = elb.create_listener(LoadBalancerArn=lb, Protocol='HTTP', Port=80,
    DefaultActions=[{'Type': 'forward', 'TargetGroupArn': blue}])['Listeners'][0]['ListenerArn']
ecs.create_cluster(clusterName='prod')
td = ecs.register_task_definition(family='web', networkMode='awsvpc', requiresCompatibilities=['FARGATE'], cpu='256', memory='512',
    containerDefinitions=[{'name': 'app', 'image': 'registry.example/web:v1', 'portMappings': [{'containerPort': 8080}],
                           'dockerLabels': {'dax.version': 'v1'}}])['taskDefinition']['taskDefinitionArn']
ecs.create_service(cluster='prod', serviceName='web', taskDefinition=td, desiredCount=2, launchType='FARGATE',
    networkConfiguration={'awsvpcConfiguration': {'subnets': [s1, s2], 'securityGroups': [sg]}},
    loadBalancers=[{'targetGroupArn': blue, 'containerName': 'app', 'containerPort': 8080}])
print(json.dumps({'listener': listener, 'blue': blue, 'green': green}))
"#;

/// What the API says now: listener weights by target group name, A/B rules, services.
const OBSERVE: &str = r#"
import sys
elb = client('elbv2'); ecs = client('ecs')
lb = elb.describe_load_balancers(Names=['web'])['LoadBalancers'][0]['LoadBalancerArn']
l = elb.describe_listeners(LoadBalancerArn=lb)['Listeners'][0]
name = lambda arn: arn.split('/')[1]
action = l['DefaultActions'][0]
if 'ForwardConfig' in action:
    weights = {name(t['TargetGroupArn']): t.get('Weight', 1) for t in action['ForwardConfig']['TargetGroups']}
else:
    weights = {name(action['TargetGroupArn']): 100}
rules = [{'priority': r['Priority'], 'conditions': r['Conditions'], 'to': name(r['Actions'][0].get('TargetGroupArn') or r['Actions'][0]['ForwardConfig']['TargetGroups'][0]['TargetGroupArn'])}
         for r in elb.describe_rules(ListenerArn=l['ListenerArn'])['Rules'] if not r['IsDefault']]
services = {}
for s in ecs.describe_services(cluster='prod', services=['web', 'web-candidate'])['services']:
    if s['status'] == 'INACTIVE':
        continue
    td = ecs.describe_task_definition(taskDefinition=s['taskDefinition'])['taskDefinition']
    services[s['serviceName']] = {'desired': s['desiredCount'], 'running': s['runningCount'],
        'image': td['containerDefinitions'][0]['image'],
        'target_groups': [name(x['targetGroupArn']) for x in s.get('loadBalancers', [])]}
print(json.dumps({'weights': weights, 'rules': rules, 'services': services}))
"#;

const ACTIONS: &str = r#"["ecs:DescribeServices", "ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition",
    "ecs:CreateService", "ecs:UpdateService", "ecs:DeleteService",
    "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:ModifyListener", "elasticloadbalancing:CreateRule",
    "elasticloadbalancing:ModifyRule", "elasticloadbalancing:DeleteRule"]"#;

struct World {
    moto: Moto,
    arns: Value,
}

impl World {
    fn new(running: &str) -> Option<World> {
        let moto = Moto::start_with_env(&[("MOTO_ECS_SERVICE_RUNNING", running)])?;
        let arns = moto.boto(SETUP);
        Some(World { moto, arns })
    }

    fn observe(&self) -> Value {
        self.moto.boto(OBSERVE)
    }

    /// The plugin's `[plugins.ecs]` table as TOML text.
    fn plugin_toml(&self, source: &str) -> String {
        format!(
            r#"[plugins.ecs]
source = "{source}"
[plugins.ecs.config]
region = "{REGION}"
cluster = "prod"
container = "app"
listener_arn = "{listener}"
stable_target_group_arn = "{blue}"
candidate_target_group_arn = "{green}"
[plugins.ecs.grants.aws]
actions = {ACTIONS}
regions = ["{REGION}"]
profile = "moto"
endpoint = "{endpoint}"
"#,
            listener = self.arns["listener"].as_str().unwrap(),
            blue = self.arns["blue"].as_str().unwrap(),
            green = self.arns["green"].as_str().unwrap(),
            endpoint = self.moto.endpoint(),
        )
    }

    fn spec(&self) -> PluginSpec {
        let table: toml::Value =
            toml::from_str(&self.plugin_toml(&plugin_path("ecs").display().to_string())).unwrap();
        let mut s = spec(&plugin_path("ecs"));
        let ecs = &table["plugins"]["ecs"];
        s.config = ecs["config"].clone();
        s.grants.aws = Some(ecs["grants"]["aws"].clone().try_into().unwrap());
        s
    }

    async fn target(&self, host: &dax::plugin::PluginHost) -> Arc<dyn Target> {
        let spec = self.spec();
        let plugin = host.load("ecs", &spec, Path::new(".")).await.unwrap();
        let config = serde_json::to_value(&spec.config).unwrap();
        plugin.target(config).await.unwrap()
    }
}

fn workload(version: &str) -> Workload {
    Workload {
        app: "web".into(),
        version: version.into(),
        artifact: format!("registry.example/web:{version}"),
        replicas: 2,
        spec: "{}".into(),
    }
}

fn weight(candidate: u8) -> TrafficSplit {
    TrafficSplit {
        candidate_weight: candidate,
        matches: vec![],
        mirror_percent: 0,
    }
}

#[tokio::test]
async fn canary_steps_header_rule_and_promotion_as_the_api_sees_them() {
    let Some(w) = World::new("2") else { return };
    let (host, _cache) = fresh_host();
    let t = w.target(&host).await;
    let support = t.traffic_support().await.unwrap();
    assert!(support.weights && support.header_matches && !support.mirroring);
    assert!(support.note.contains("cannot mirror"), "{}", support.note);

    t.deploy(&workload("v2")).await.unwrap();
    let seen = w.observe();
    let candidate = &seen["services"]["web-candidate"];
    assert_eq!(candidate["image"], "registry.example/web:v2", "{seen}");
    assert_eq!(candidate["target_groups"], json!(["web-green"]), "{seen}");
    assert_eq!(seen["weights"], json!({"web-blue": 100}), "{seen}");
    // Deploying again (a resume) changes nothing.
    t.deploy(&workload("v2")).await.unwrap();
    assert_eq!(w.observe()["services"], seen["services"]);
    let status = t.status("web", Slot::Candidate).await.unwrap();
    assert_eq!(
        (status.version.as_str(), status.ready),
        ("v2", 2),
        "{status:?}"
    );
    let status = t.status("web", Slot::Stable).await.unwrap();
    assert_eq!(status.version, "v1", "{status:?}");

    for step in [10u8, 50] {
        t.set_traffic("web", &weight(step)).await.unwrap();
        let seen = w.observe();
        assert_eq!(
            seen["weights"],
            json!({"web-blue": 100 - step, "web-green": step}),
            "{seen}"
        );
    }
    // A/B: requests with `x-canary: always` or cookie beta=1 go to the candidate.
    let ab = TrafficSplit {
        candidate_weight: 0,
        matches: vec![
            RequestMatch {
                source: MatchSource::Header,
                name: "x-canary".into(),
                value: StringMatch::Exact("always".into()),
            },
            RequestMatch {
                source: MatchSource::Cookie,
                name: "beta".into(),
                value: StringMatch::Exact("1".into()),
            },
        ],
        mirror_percent: 0,
    };
    t.set_traffic("web", &ab).await.unwrap();
    t.set_traffic("web", &ab).await.unwrap();
    let seen = w.observe();
    assert_eq!(seen["rules"].as_array().unwrap().len(), 1, "{seen}");
    let rule = &seen["rules"][0];
    assert_eq!(rule["to"], "web-green", "{seen}");
    let headers: Vec<_> = rule["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["HttpHeaderConfig"]["HttpHeaderName"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                c["HttpHeaderConfig"]["Values"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        headers,
        vec![
            ("x-canary".to_string(), "always".to_string()),
            ("Cookie".into(), "*beta=1*".into())
        ]
    );
    assert_eq!(
        seen["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{seen}"
    );
    // Mirroring and regular expressions are refused, not half done.
    let mirror = TrafficSplit {
        mirror_percent: 10,
        ..weight(0)
    };
    let err = t.set_traffic("web", &mirror).await.unwrap_err();
    assert!(format!("{err:#}").contains("cannot mirror"), "{err:#}");

    t.promote("web").await.unwrap();
    let seen = w.observe();
    assert_eq!(
        seen["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{seen}"
    );
    assert_eq!(seen["rules"], json!([]), "{seen}");
    assert!(seen["services"].get("web-candidate").is_none(), "{seen}");
    assert_eq!(
        seen["services"]["web"]["image"], "registry.example/web:v2",
        "{seen}"
    );
    // Promoting again (a resume) is a no-op.
    t.promote("web").await.unwrap();
    assert_eq!(w.observe(), seen);
    let status = t.status("web", Slot::Stable).await.unwrap();
    assert_eq!(status.version, "v2", "{status:?}");
}

#[tokio::test]
async fn rollback_leaves_stable_alone_and_is_idempotent() {
    let Some(w) = World::new("2") else { return };
    let (host, _cache) = fresh_host();
    let t = w.target(&host).await;
    t.deploy(&workload("v2")).await.unwrap();
    t.set_traffic("web", &weight(30)).await.unwrap();
    t.rollback("web").await.unwrap();
    let seen = w.observe();
    assert_eq!(
        seen["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{seen}"
    );
    assert!(seen["services"].get("web-candidate").is_none(), "{seen}");
    assert_eq!(
        seen["services"]["web"]["image"], "registry.example/web:v1",
        "{seen}"
    );
    t.rollback("web").await.unwrap();
    t.finalize("web").await.unwrap();
    assert_eq!(w.observe(), seen);
}

#[tokio::test]
async fn a_candidate_whose_tasks_never_run_is_never_ready() {
    // moto gives every service it creates this running count: 0 = tasks never start.
    let Some(w) = World::new("0") else { return };
    let (host, _cache) = fresh_host();
    let t = w.target(&host).await;
    t.deploy(&workload("v2")).await.unwrap();
    let status = t.status("web", Slot::Candidate).await.unwrap();
    assert_eq!((status.desired, status.ready), (2, 0), "{status:?}");
    assert!(status.message.contains("0/2 running"), "{status:?}");
}

/// The deployment file `dax deploy` runs: canary 10% steps to 30%, one check.
fn deployment(w: &World, query: &str, dir: &Path) -> std::path::PathBuf {
    deployment_with(
        w,
        query,
        dir,
        "canary",
        "interval = \"100ms\"\nthreshold = 1\nmaxWeight = 30\nstepWeight = 10",
    )
}

fn deployment_with(
    w: &World,
    query: &str,
    dir: &Path,
    strategy: &str,
    params: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"[deployment]
app = "web"
version = "v2"
artifact = "registry.example/web:v2"
progress_deadline = "30s"

[target]
plugin = "ecs"
[target.workload]
replicas = 2

[strategy]
plugin = "{strategy}"
[strategy.params]
{params}

[[checks]]
name = "success-rate"
provider = "metrics"
query = "{query}"
min = 99

{ecs}
[plugins.{strategy}]
source = "{strategy_source}"

[plugins.metrics]
source = "{metrics}"
"#,
        ecs = w.plugin_toml(&plugin_path("ecs").display().to_string()),
        strategy_source = plugin_path(strategy).display(),
        metrics = plugin_path("hello-metrics").display(),
    );
    let path = dir.join("deploy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn dax_deploy(file: &Path, dir: &Path) -> std::process::Output {
    Command::new(dax_bin())
        .args([
            "deploy",
            file.to_str().unwrap(),
            "--no-progress",
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .current_dir(dir)
        .env("DAX_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn dax_deploy_promotes_a_healthy_canary_and_rolls_back_a_failing_one() {
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    // A failing check: rolled back, v1 keeps all traffic, the candidate is gone.
    let out = dax_deploy(&deployment(&w, "value:5", dir.path()), dir.path());
    let seen = w.observe();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        seen["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{seen}"
    );
    assert!(seen["services"].get("web-candidate").is_none(), "{seen}");
    assert_eq!(
        seen["services"]["web"]["image"], "registry.example/web:v1",
        "{seen}"
    );
    // A passing one: promoted, v2 serves everything from the stable service.
    let out = dax_deploy(&deployment(&w, "value:100", dir.path()), dir.path());
    let seen = w.observe();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        seen["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{seen}"
    );
    assert!(seen["services"].get("web-candidate").is_none(), "{seen}");
    assert_eq!(
        seen["services"]["web"]["image"], "registry.example/web:v2",
        "{seen}"
    );
    assert_eq!(
        seen["services"]["web"]["target_groups"],
        json!(["web-blue"]),
        "{seen}"
    );
}

#[tokio::test]
async fn dax_validate_refuses_mirroring_which_an_alb_cannot_do() {
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    // Mirroring: ALB has none, so `dax validate` refuses the strategy before anything runs.
    let file = deployment_with(
        &w,
        "value:100",
        dir.path(),
        "blue-green",
        "interval = \"100ms\"\niterations = 1\nthreshold = 1\nmirror = true",
    );
    let out = Command::new(dax_bin())
        .args(["validate", file.to_str().unwrap()])
        .current_dir(dir.path())
        .env("DAX_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("mirror"), "{text}");
    assert!(w.observe()["services"].get("web-candidate").is_none());
}
