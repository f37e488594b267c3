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

/// The API's state, polled every 100 ms by one python process while `dax` runs: every
/// distinct state seen, in order (a state lasting less than a poll may be missed, so the
/// tests keep each step at least a second long).
struct Watch {
    child: std::process::Child,
    seen: Arc<std::sync::Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(w: &World) -> Watch {
        use std::io::BufRead as _;
        let body: String = OBSERVE
            .lines()
            .filter(|l| {
                !l.starts_with("import") && !l.starts_with("elb = ") && !l.trim().is_empty()
            })
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
            .replace("    print(json.dumps(", "    now = (json.dumps(");
        let script = format!(
            "import boto3, json, time, sys\nelb = boto3.client('elbv2', endpoint_url='{e}', region_name='{REGION}', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             ecs = boto3.client('ecs', endpoint_url='{e}', region_name='{REGION}', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             last = None\nwhile True:\n{body}    if now != last:\n        print(now, flush=True)\n        last = now\n    time.sleep(0.1)\n",
            e = w.moto.endpoint()
        );
        let mut child = Command::new(dax_tests::moto::venv().join("bin/python"))
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let into = seen.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    into.lock().unwrap().push(v);
                }
            }
        });
        // The first state is there before dax starts.
        let t0 = std::time::Instant::now();
        while seen.lock().unwrap().is_empty() && t0.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Watch {
            child,
            seen,
            reader: Some(reader),
        }
    }

    /// Stop watching; every distinct state seen, in order.
    fn stop(mut self) -> Vec<Value> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The index of the first state after `from` that `pred` holds for, with the whole sequence
/// in the failure message.
fn find_after(states: &[Value], from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    states
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, s)| pred(s))
        .map(|(i, _)| i)
        .unwrap_or_else(|| {
            panic!(
                "never saw {what} (after state {from}):\n{}",
                states
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
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

/// `dax deploy` with builtin:blue-green: the candidate runs beside stable with no traffic
/// while it is analyzed, then the listener switches all traffic to it at once, and promotion
/// rolls the stable service onto the new revision and deletes the candidate.
#[tokio::test]
async fn dax_deploy_blue_green_switches_all_traffic_at_once() {
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = deployment_with(
        &w,
        "value:100",
        dir.path(),
        "blue-green",
        "interval = \"1s\"\niterations = 1\nthreshold = 1\nscaleDownDelay = \"2s\"",
    );
    let watch = Watch::start(&w);
    let out = dax_deploy(&file, dir.path());
    let states = watch.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}\n{states:#?}");
    let candidate_v2 =
        |s: &Value| s["services"]["web-candidate"]["image"] == "registry.example/web:v2";
    // Analysis: the candidate runs in web-green, all traffic stays on web-blue.
    let analyzed = find_after(&states, 0, "the candidate running without traffic", |s| {
        candidate_v2(s)
            && s["services"]["web-candidate"]["target_groups"] == json!(["web-green"])
            && s["weights"]["web-blue"] == 100
            && s["weights"].get("web-green").is_none_or(|g| g == 0)
    });
    // The switch: all traffic to the candidate, stable still on v1 for a fast switch-back.
    let switched = find_after(&states, analyzed, "all traffic on web-green", |s| {
        candidate_v2(s)
            && s["weights"] == json!({"web-blue": 0, "web-green": 100})
            && s["services"]["web"]["image"] == "registry.example/web:v1"
    });
    // Never a split in between: blue-green is all or nothing.
    for s in &states {
        let green = s["weights"]["web-green"].as_u64().unwrap_or(0);
        assert!(
            green == 0 || green == 100,
            "a partial split in a blue-green: {s}"
        );
    }
    // The end state from the API itself: the watcher's last poll may lag behind under load.
    let end = &w.observe();
    assert!(states.len() > switched);
    assert_eq!(
        end["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{end}"
    );
    assert!(end["services"].get("web-candidate").is_none(), "{end}");
    assert_eq!(
        end["services"]["web"]["image"], "registry.example/web:v2",
        "{end}"
    );
    assert_eq!(end["services"]["web"]["desired"], 2, "{end}");
    assert_eq!(end["rules"], json!([]), "{end}");
}

/// `dax deploy` with builtin:ab-test: one listener rule sends requests with `x-canary:
/// always` to the candidate while everything else stays on stable; promotion removes it.
#[tokio::test]
async fn dax_deploy_ab_test_routes_by_header_then_promotes() {
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = deployment_with(
        &w,
        "value:100",
        dir.path(),
        "ab-test",
        "interval = \"1s\"\niterations = 2\nthreshold = 1\nmatch = [{ header = \"x-canary\", exact = \"always\" }]",
    );
    let watch = Watch::start(&w);
    let out = dax_deploy(&file, dir.path());
    let states = watch.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}\n{states:#?}");
    let routed = find_after(&states, 0, "the A/B rule to web-green", |s| {
        s["rules"].as_array().is_some_and(|r| r.len() == 1)
            && s["rules"][0]["to"] == "web-green"
            && s["rules"][0]["conditions"][0]["HttpHeaderConfig"]
                == json!({"HttpHeaderName": "x-canary", "Values": ["always"]})
            && s["services"]["web-candidate"]["image"] == "registry.example/web:v2"
    });
    // Only matching requests move: the default action keeps every other request on stable.
    // (Whether it lists web-green at weight 0 yet depends on when the watcher polled: the
    // plugin adds the rule and rewrites the default action in two calls, and a CI run caught
    // the moment between them.)
    let during = &states[routed];
    assert_eq!(during["weights"]["web-blue"], 100, "{during}");
    assert!(
        during["weights"].get("web-green").is_none_or(|w| *w == 0),
        "{during}"
    );
    let end = &w.observe(); // not the watcher's last poll, which may lag behind
    assert_eq!(end["rules"], json!([]), "{end}");
    assert_eq!(
        end["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{end}"
    );
    assert!(end["services"].get("web-candidate").is_none(), "{end}");
    assert_eq!(
        end["services"]["web"]["image"], "registry.example/web:v2",
        "{end}"
    );
}

/// `dax deploy` SIGKILLed mid-rollout (right after a weight step is journaled), then `dax
/// resume`: it finishes exactly — promoted, v2 alone at weight 100, the candidate deleted, and
/// no resource made twice (one new task definition revision, one service, no rule).
#[test]
fn sigkill_mid_rollout_then_resume_finishes_exactly() {
    use dax::state::{Event, StateDir};
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = deployment_with(
        &w,
        "value:100",
        dir.path(),
        "canary",
        "interval = \"1s\"\nthreshold = 1\nmaxWeight = 30\nstepWeight = 10",
    );
    let state = StateDir::new(dir.path().join("state"));
    let shifted = |id: &str| {
        let records = state.read(id).unwrap_or_default();
        let shifts: Vec<u64> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Decision {
                    n,
                    step: dax::contract::Step::SetTraffic(t),
                    ..
                } if t.candidate_weight > 0 => Some(*n),
                _ => None,
            })
            .collect();
        records
            .iter()
            .any(|r| matches!(r.event, Event::Outcome { n, .. } if shifts.contains(&n)))
    };
    let mut child = Command::new(dax_bin())
        .args([
            "deploy",
            file.to_str().unwrap(),
            "--no-progress",
            "--id",
            "k",
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .current_dir(dir.path())
        .env("DAX_CACHE_DIR", dir.path().join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !shifted("k") {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "no weight step journaled within 60s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "dax deploy ended before a weight step"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
    child.wait().unwrap();
    let mid = w.observe();
    assert_eq!(
        mid["weights"],
        json!({"web-blue": 90, "web-green": 10}),
        "{mid}"
    );
    assert_eq!(
        mid["services"]["web-candidate"]["image"], "registry.example/web:v2",
        "{mid}"
    );

    let out = Command::new(dax_bin())
        .args(["resume", "k", "--no-progress", "--state-dir"])
        .arg(dir.path().join("state"))
        .current_dir(dir.path())
        .env("DAX_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let end = w.observe();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{end}",
        String::from_utf8_lossy(&out.stderr)
    );
    match state.read("k").unwrap().last().map(|r| &r.event) {
        Some(Event::Finished { status, .. }) => {
            assert_eq!(*status, dax::contract::FinalStatus::Promoted)
        }
        other => panic!("the journal does not end with finished: {other:?}"),
    }
    assert_eq!(
        end["weights"],
        json!({"web-blue": 100, "web-green": 0}),
        "{end}"
    );
    assert_eq!(end["rules"], json!([]), "{end}");
    assert!(end["services"].get("web-candidate").is_none(), "{end}");
    assert_eq!(
        end["services"]["web"]["image"], "registry.example/web:v2",
        "{end}"
    );
    assert_eq!(end["services"]["web"]["desired"], 2, "{end}");
    // Nothing made twice: one new revision of `web`, one active service.
    let made = w.moto.boto(
        "ecs = client('ecs')\n\
         tds = ecs.list_task_definitions(familyPrefix='web')['taskDefinitionArns']\n\
         svcs = [s for s in ecs.describe_services(cluster='prod', services=ecs.list_services(cluster='prod')['serviceArns'])['services'] if s['status'] == 'ACTIVE']\n\
         print(json.dumps({'revisions': len(tds), 'services': sorted(s['serviceName'] for s in svcs)}))",
    );
    assert_eq!(made, json!({"revisions": 2, "services": ["web"]}), "{made}");
}

/// The `[plugins.ecs]` table for ECS's own rolling deployment.
fn rolling_deployment(w: &World, query: &str, dir: &Path) -> std::path::PathBuf {
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
plugin = "rolling"
[strategy.params]
maxSurge = "100%"
maxUnavailable = 0
analysis = true
interval = "1s"
threshold = 1

[[checks]]
name = "success-rate"
provider = "metrics"
query = "{query}"
min = 99

[plugins.ecs]
source = "{ecs}"
[plugins.ecs.config]
mode = "rolling"
region = "{REGION}"
cluster = "prod"
container = "app"
minimum_healthy_percent = 50
maximum_percent = 200
[plugins.ecs.grants.aws]
actions = ["ecs:DescribeServices", "ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition",
    "ecs:UpdateService", "ecs:TagResource"]
regions = ["{REGION}"]
resources = ["arn:aws:ecs:{REGION}:123456789012:*"]
account = "123456789012"
profile = "moto"
endpoint = "{endpoint}"

[plugins.rolling]
source = "{rolling}"

[plugins.metrics]
source = "{metrics}"
"#,
        ecs = plugin_path("ecs").display(),
        rolling = plugin_path("rolling").display(),
        metrics = plugin_path("hello-metrics").display(),
        endpoint = w.moto.endpoint(),
    );
    let path = dir.join("deploy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// ECS's rolling deployment through `dax deploy` + builtin:rolling: the service itself moves
/// to the new revision with the deployment configuration and circuit breaker; a failing
/// check rolls it back to the previous revision. The ARN-scoped grant (with `account`) lets
/// the plugin's bare names through. moto starts no ECS deployment on UpdateService (its
/// deployments[] keeps the one from creation), so readiness falls back to the service's
/// counts here; the rollout states are covered by plan.rs's unit tests.
#[tokio::test]
async fn dax_deploy_rolling_through_ecs_own_deployment() {
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    const SERVICE: &str = "ecs = client('ecs')\n\
        s = ecs.describe_services(cluster='prod', services=['web'], include=['TAGS'])['services'][0]\n\
        td = ecs.describe_task_definition(taskDefinition=s['taskDefinition'])['taskDefinition']\n\
        print(json.dumps({'image': td['containerDefinitions'][0]['image'], 'revision': td['revision'], 'desired': s['desiredCount'],\n\
            'config': s.get('deploymentConfiguration'), 'tags': {t['key']: t['value'] for t in s.get('tags', [])},\n\
            'services': len(ecs.list_services(cluster='prod')['serviceArns'])}))";
    // A failing check: rolled back onto revision 1.
    let out = dax_deploy(&rolling_deployment(&w, "value:5", dir.path()), dir.path());
    let seen = w.moto.boto(SERVICE);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{seen}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        (seen["image"].as_str(), seen["revision"].as_u64()),
        (Some("registry.example/web:v1"), Some(1)),
        "{seen}"
    );
    assert_eq!(seen["tags"]["dax.candidate"], "", "{seen}");
    assert_eq!(seen["services"], 1, "{seen}");
    // A passing one: the service runs v2 (revision 3: 2 was the rolled-back attempt).
    let out = dax_deploy(&rolling_deployment(&w, "value:100", dir.path()), dir.path());
    let seen = w.moto.boto(SERVICE);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}\n{seen}");
    assert_eq!(
        (seen["image"].as_str(), seen["revision"].as_u64()),
        (Some("registry.example/web:v2"), Some(3)),
        "{seen}"
    );
    assert_eq!(seen["desired"], 2, "{seen}");
    assert_eq!(
        seen["services"], 1,
        "no second service in rolling mode: {seen}"
    );
    assert_eq!(
        seen["tags"]["dax.previous"]
            .as_str()
            .map(|t| t.ends_with("web:1")),
        Some(true),
        "{seen}"
    );
    assert_eq!(
        seen["config"],
        json!({"minimumHealthyPercent": 50, "maximumPercent": 200, "deploymentCircuitBreaker": {"enable": true, "rollback": false}}),
        "{seen}"
    );
    // The listener was never touched: ECS's own deployment moves no traffic.
    assert_eq!(w.observe()["weights"], json!({"web-blue": 100}));
}

/// A CodeDeploy-style preset through `dax deploy`: `canary20-1s` (CodeDeploy's
/// ECSCanary10Percent5Minutes with other numbers) sets 20%, analyzes it, then shifts all.
#[tokio::test]
async fn dax_deploy_with_a_codedeploy_preset() {
    let Some(w) = World::new("2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = deployment_with(
        &w,
        "value:100",
        dir.path(),
        "canary",
        "threshold = 1\npreset = \"canary20-1s\"",
    );
    let watch = Watch::start(&w);
    let out = dax_deploy(&file, dir.path());
    let states = watch.stop();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{states:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 20% lasts its 1 s analysis; the 100% step lasts only until promotion, too short to be
    // sure a poll sees it.
    find_after(&states, 0, "20% on the candidate", |s| {
        s["weights"] == json!({"web-blue": 80, "web-green": 20})
    });
    let weights: Vec<u64> = states
        .iter()
        .filter_map(|s| s["weights"]["web-green"].as_u64())
        .collect();
    assert!(
        weights.iter().all(|g| [0, 20, 100].contains(g)),
        "only the preset's weights: {weights:?}"
    );
    let end = &w.observe(); // not the watcher's last poll, which may lag behind
    assert_eq!(
        end["services"]["web"]["image"], "registry.example/web:v2",
        "{end}"
    );
    assert!(end["services"].get("web-candidate").is_none(), "{end}");
}
