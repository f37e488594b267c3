//! `dax:host/aws` against a real AWS API emulator (moto, tests/support/moto.rs): what a grant
//! lets through, that the host's SigV4 signature is verified, and every way a hostile plugin
//! tries to get past the grant. The probe plugin (tests/plugins/aws-probe) makes the calls;
//! the host signs and sends them. The plugin holds no key throughout.
//!
//! Skipped locally when the moto venv is missing; a failure under `CI=true`.

use dax::contract::Slot;
use dax::plugin::PluginSpec;
use dax_tests::moto::{self, Moto, REGION};
use dax_tests::{fresh_host, plugin_path, spec};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The grant most tests use: ECS reads, cluster creation, ELBv2 reads, in us-east-1.
fn grant(endpoint: &str, extra: &str) -> toml::Value {
    toml::from_str(&format!(
        r#"
        actions = ["ecs:CreateCluster", "ecs:List*", "ecs:Describe*", "ecs:UpdateService",
                   "elasticloadbalancing:Describe*", "sts:GetCallerIdentity"]
        regions = ["{REGION}"]
        profile = "moto"
        endpoint = "{endpoint}"
        {extra}
        "#
    ))
    .unwrap()
}

fn probe_spec(aws: Option<toml::Value>, http: Vec<String>) -> PluginSpec {
    let mut s = spec(&plugin_path("aws-probe"));
    s.grants.aws = aws.map(|a| a.try_into().expect("a valid aws grant"));
    s.grants.http = http;
    s
}

struct Probe(Arc<dyn dax::contract::Target>);

impl Probe {
    async fn new(host: &dax::plugin::PluginHost, spec: PluginSpec) -> Probe {
        let plugin = host.load("aws-probe", &spec, Path::new(".")).await.unwrap();
        Probe(plugin.target(json!({})).await.unwrap())
    }

    /// Make one call; the plugin's report `{"ok": ..}` / `{"err": variant, "code", "message"}`.
    async fn call(&self, call: Value) -> Value {
        let status = self
            .0
            .status(&call.to_string(), Slot::Stable)
            .await
            .expect("the probe itself never fails");
        serde_json::from_str(&status.message).unwrap()
    }
}

fn ecs(action: &str, body: Value) -> Value {
    json!({"op": "call", "service": "ecs", "action": action, "region": REGION, "json": body})
}

fn elbv2(action: &str, params: &[(&str, &str)]) -> Value {
    json!({"op": "call", "service": "elasticloadbalancing", "action": action, "region": REGION,
        "query": {"version": "2015-12-01", "params": params}})
}

#[track_caller]
fn assert_refused(answer: &Value, variant: &str, text: &str) {
    assert_eq!(answer["err"], variant, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains(text), "`{text}` not in: {message}");
}

#[tokio::test]
async fn granted_calls_are_signed_sent_and_answered_in_both_protocols() {
    let Some(moto) = Moto::start() else { return };
    let (host, _cache) = fresh_host();
    let probe = Probe::new(&host, probe_spec(Some(grant(&moto.endpoint(), "")), vec![])).await;

    // JSON 1.1 (ECS): the cluster exists afterwards, as the API itself says.
    let created = probe
        .call(ecs("CreateCluster", json!({"clusterName": "prod"})))
        .await;
    assert_eq!(created["ok"]["status"], 200, "{created}");
    let body: Value = serde_json::from_str(created["ok"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["cluster"]["clusterName"], "prod");
    assert!(!created["ok"]["request_id"].as_str().unwrap().is_empty());
    let listed = moto.boto("print(json.dumps(client('ecs').list_clusters()['clusterArns']))");
    assert_eq!(listed[0], "arn:aws:ecs:us-east-1:123456789012:cluster/prod");

    // Query (ELBv2): the answer is the service's XML.
    let lbs = probe.call(elbv2("DescribeLoadBalancers", &[])).await;
    assert!(
        lbs["ok"]["body"]
            .as_str()
            .unwrap()
            .contains("<DescribeLoadBalancersResponse"),
        "{lbs}"
    );

    // AWS's refusals arrive structured, from the JSON error format ...
    let missing = probe
        .call(ecs(
            "UpdateService",
            json!({"cluster": "nope", "service": "web", "desiredCount": 1}),
        ))
        .await;
    assert_eq!(missing["err"], "service", "{missing}");
    assert_eq!(missing["code"], "ClusterNotFoundException", "{missing}");
    // ... and from the XML one.
    let missing = probe
        .call(elbv2(
            "DescribeLoadBalancers",
            &[("Names.member.1", "nope")],
        ))
        .await;
    assert_eq!(missing["err"], "service", "{missing}");
    assert_eq!(missing["code"], "LoadBalancerNotFound", "{missing}");
    assert!(
        missing["message"].as_str().unwrap().starts_with("400 "),
        "{missing}"
    );
}

#[tokio::test]
async fn calls_outside_the_grant_are_refused_before_anything_is_sent() {
    let Some(moto) = Moto::start() else { return };
    moto.boto("client('ecs').create_cluster(clusterName='prod'); print(1)");
    let (host, _cache) = fresh_host();
    let probe = Probe::new(&host, probe_spec(Some(grant(&moto.endpoint(), "")), vec![])).await;

    // An action of a granted service that is not granted.
    let deleted = probe
        .call(ecs("DeleteCluster", json!({"cluster": "prod"})))
        .await;
    assert_refused(
        &deleted,
        "denied",
        "plugin `aws-probe` may not call `ecs:DeleteCluster`: add \"ecs:DeleteCluster\" to grants.aws.actions of [plugins.aws-probe] if it should",
    );
    // A service that is not granted at all (the wildcard is per service).
    let ec2 = probe
        .call(
            json!({"op": "call", "service": "ec2", "action": "DescribeInstances", "region": REGION,
            "query": {"version": "2016-11-15"}}),
        )
        .await;
    assert_refused(
        &ec2,
        "denied",
        "add \"ec2:DescribeInstances\" to grants.aws.actions",
    );
    // A region that is not granted.
    let mut other_region = ecs("ListClusters", json!({}));
    other_region["region"] = json!("eu-west-1");
    assert_refused(
        &probe.call(other_region).await,
        "denied",
        "add \"eu-west-1\" to grants.aws.regions of [plugins.aws-probe]",
    );
    // No region given and none configured for the host.
    let mut no_region = ecs("ListClusters", json!({}));
    no_region["region"] = Value::Null;
    assert_refused(&probe.call(no_region).await, "invalid", "no region given");
    // Names that would steer the request elsewhere.
    let mut evil_region = ecs("ListClusters", json!({}));
    evil_region["region"] = json!("us-east-1.evil.example");
    assert_refused(
        &probe.call(evil_region).await,
        "invalid",
        "is not a region name",
    );
    let evil_service = json!({"op": "call", "service": "ecs.evil.example/x", "action": "ListClusters",
        "region": REGION, "json": {}});
    assert_refused(
        &probe.call(evil_service).await,
        "invalid",
        "is not an AWS service name",
    );
    let evil_action = ecs("ListClusters\r\nX-Amz-Target: x.DeleteCluster", json!({}));
    assert_refused(
        &probe.call(evil_action).await,
        "invalid",
        "is not an AWS action name",
    );
    // A Query body cannot name a second action.
    let smuggled = elbv2("DescribeLoadBalancers", &[("Action", "DeleteLoadBalancer")]);
    assert_refused(&probe.call(smuggled).await, "invalid", "set by the host");
    let not_json = ecs("ListClusters", json!("{not json"));
    assert_refused(&probe.call(not_json).await, "invalid", "not JSON");

    // ARNs outside `resources`, anywhere in the body.
    let scoped = Probe::new(
        &host,
        probe_spec(
            Some(grant(
                &moto.endpoint(),
                "resources = [\"arn:aws:ecs:us-east-1:123456789012:*/staging*\"]",
            )),
            vec![],
        ),
    )
    .await;
    let outside = scoped
        .call(ecs(
            "DescribeServices",
            json!({"cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/staging",
                "services": ["arn:aws:ecs:us-east-1:123456789012:service/prod/web"]}),
        ))
        .await;
    assert_refused(
        &outside,
        "denied",
        "may not touch `arn:aws:ecs:us-east-1:123456789012:service/prod/web`: add a pattern matching it to grants.aws.resources of [plugins.aws-probe]",
    );
    let inside = scoped
        .call(ecs(
            "DescribeClusters",
            json!({"clusters": ["arn:aws:ecs:us-east-1:123456789012:cluster/staging"]}),
        ))
        .await;
    assert_eq!(inside["ok"]["status"], 200, "{inside}");

    // No grant at all: the import alone is refused at load time.
    let err = host
        .load("aws-probe", &probe_spec(None, vec![]), Path::new("."))
        .await
        .err()
        .expect("a plugin importing dax:host/aws without grants.aws must not load");
    let text = format!("{err:#}");
    assert!(
        text.contains("imports capabilities its entry does not grant: dax:host/aws needs [plugins.aws-probe.grants.aws]"),
        "{text}"
    );

    // Nothing refused reached AWS: the cluster is still there, and the host keeps working.
    let clusters = moto.boto("print(json.dumps(client('ecs').list_clusters()['clusterArns']))");
    assert_eq!(clusters.as_array().unwrap().len(), 1, "{clusters}");
    let listed = probe.call(ecs("ListClusters", json!({}))).await;
    assert_eq!(listed["ok"]["status"], 200, "{listed}");
}

#[tokio::test]
async fn metadata_and_aws_endpoints_cannot_be_reached_through_wasi_http() {
    let Some(moto) = Moto::start() else { return };
    let (host, _cache) = fresh_host();
    let probe = Probe::new(&host, probe_spec(Some(grant(&moto.endpoint(), "")), vec![])).await;
    for url in [
        // EC2 instance metadata (IMDS) and the ECS container credentials endpoint.
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_string(),
        "http://169.254.170.2/v2/credentials/".to_string(),
        // AWS's own endpoints, and the granted emulator itself: only the capability goes there.
        "https://ecs.us-east-1.amazonaws.com/".to_string(),
        "https://sts.amazonaws.com/?Action=GetCallerIdentity".to_string(),
        format!("{}/", moto.endpoint()),
    ] {
        let direct = probe.call(json!({"op": "http-get", "url": url})).await;
        assert_eq!(direct["err"], "http", "{url}: {direct}");
    }
    // The capability still works right after.
    let listed = probe.call(ecs("ListClusters", json!({}))).await;
    assert_eq!(listed["ok"]["status"], 200, "{listed}");
}

#[tokio::test]
async fn moto_verifies_the_hosts_signature_and_refuses_a_wrong_secret() {
    let Some(moto) = Moto::start() else { return };
    // An IAM user with a key, then authentication on (`reset-auth` with 0 free calls).
    let key = moto.boto(
        r#"
iam = client('iam')
iam.create_user(UserName='dax')
policy = iam.create_policy(PolicyName='all', PolicyDocument=json.dumps({'Version': '2012-10-17',
    'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))['Policy']['Arn']
iam.attach_user_policy(UserName='dax', PolicyArn=policy)
k = iam.create_access_key(UserName='dax')['AccessKey']
urllib.request.urlopen(urllib.request.Request(ENDPOINT + '/moto-api/reset-auth', data=b'0',
    headers={'Content-Type': 'text/plain'}, method='POST')).read()
print(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))
"#,
    );
    let (id, secret) = (key[0].as_str().unwrap(), key[1].as_str().unwrap());
    let good_profile = format!("moto-good-{}", moto.port);
    let bad_profile = format!("moto-bad-{}", moto.port);
    moto::add_profiles(&[
        (&good_profile, id, secret),
        (&bad_profile, id, "not-the-secret"),
    ]);
    let (host, _cache) = fresh_host();
    let with_profile = |p: &str| {
        let mut g = grant(&moto.endpoint(), "");
        g["profile"] = toml::Value::String(p.into());
        probe_spec(Some(g), vec![])
    };
    let good = Probe::new(&host, with_profile(&good_profile)).await;
    let bad = Probe::new(&host, with_profile(&bad_profile)).await;

    let refused = bad.call(ecs("ListClusters", json!({}))).await;
    assert_eq!(refused["err"], "service", "{refused}");
    assert_eq!(refused["code"], "SignatureDoesNotMatch", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().starts_with("403 "),
        "{refused}"
    );
    // The signed caller is the IAM user: moto checked the signature, then the policy.
    let ok = good.call(ecs("ListClusters", json!({}))).await;
    assert_eq!(ok["ok"]["status"], 200, "{ok}");
    let who = good
        .call(
            json!({"op": "call", "service": "sts", "action": "GetCallerIdentity", "region": REGION,
            "query": {"version": "2011-06-15"}}),
        )
        .await;
    assert!(
        who["ok"]["body"].as_str().unwrap().contains("user/dax"),
        "{who}"
    );
    assert!(!who.to_string().contains(secret));
}

/// A local endpoint answering from a script of (status, body), then the last one forever;
/// counts requests. Lets the retry policy be measured without AWS.
fn scripted_endpoint(script: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = script[n.min(script.len() - 1)];
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut sink = vec![0; length];
            let _ = reader.read_exact(&mut sink);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://127.0.0.1:{port}"), hits)
}

const THROTTLED: &str =
    "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
const UNAVAILABLE: &str = "<ErrorResponse><Error><Code>ServiceUnavailable</Code><Message>try later</Message></Error></ErrorResponse>";
const OK: &str =
    "<DescribeLoadBalancersResponse><DescribeLoadBalancersResult/></DescribeLoadBalancersResponse>";

#[tokio::test]
async fn throttling_and_5xx_are_retried_within_the_grant_timeout() {
    moto::host_credentials();
    let (host, _cache) = fresh_host();
    // Throttled twice, then answered: the plugin sees only the answer.
    let (endpoint, hits) = scripted_endpoint(vec![(400, THROTTLED), (503, UNAVAILABLE), (200, OK)]);
    let probe = Probe::new(&host, probe_spec(Some(grant(&endpoint, "")), vec![])).await;
    let answer = probe.call(elbv2("DescribeLoadBalancers", &[])).await;
    assert_eq!(answer["ok"]["status"], 200, "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Always unavailable: retried with backoff until the 2s timeout, then the last refusal.
    let (endpoint, hits) = scripted_endpoint(vec![(503, UNAVAILABLE)]);
    let probe = Probe::new(
        &host,
        probe_spec(Some(grant(&endpoint, "timeout = \"2s\"")), vec![]),
    )
    .await;
    let started = Instant::now();
    let answer = probe.call(elbv2("DescribeLoadBalancers", &[])).await;
    let took = started.elapsed();
    assert_eq!(answer["err"], "service", "{answer}");
    assert_eq!(answer["code"], "ServiceUnavailable", "{answer}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let attempts = hits.load(Ordering::SeqCst);
    assert!((3..=20).contains(&attempts), "{attempts} attempts");

    // A client error is not retried.
    let (endpoint, hits) = scripted_endpoint(vec![(
        400,
        "<ErrorResponse><Error><Code>ValidationError</Code><Message>bad</Message></Error></ErrorResponse>",
    )]);
    let probe = Probe::new(&host, probe_spec(Some(grant(&endpoint, "")), vec![])).await;
    let answer = probe.call(elbv2("DescribeLoadBalancers", &[])).await;
    assert_eq!(answer["code"], "ValidationError", "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn huge_answers_are_refused_and_the_host_keeps_working() {
    moto::host_credentials();
    const BIG: &str = concat!(
        "<DescribeLoadBalancersResponse>",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    );
    let big: &'static str = Box::leak(BIG.repeat(40).into_boxed_str());
    let (endpoint, _hits) = scripted_endpoint(vec![(200, big), (200, OK)]);
    let (host, _cache) = fresh_host();
    let probe = Probe::new(
        &host,
        probe_spec(Some(grant(&endpoint, "max_response_kib = 1")), vec![]),
    )
    .await;
    let huge = probe.call(elbv2("DescribeLoadBalancers", &[])).await;
    assert_refused(
        &huge,
        "too-large",
        "larger than 1 KiB: narrow the call (filters, MaxResults) or raise grants.aws.max_response_kib of [plugins.aws-probe]",
    );
    let next = probe.call(elbv2("DescribeLoadBalancers", &[])).await;
    assert_eq!(next["ok"]["status"], 200, "{next}");
}

#[tokio::test]
async fn malformed_grants_are_refused_at_load_naming_the_field() {
    let (host, _cache) = fresh_host();
    for (grant, field) in [
        ("regions = [\"us-east-1\"]", "grants.aws.actions"),
        (
            "actions = [\"*\"]\nregions = [\"us-east-1\"]",
            "grants.aws.actions",
        ),
        ("actions = [\"ecs:ListClusters\"]", "grants.aws.regions"),
        (
            "actions = [\"ecs:ListClusters\"]\nregions = [\"*\"]",
            "grants.aws.regions",
        ),
        (
            "actions = [\"ecs:ListClusters\"]\nregions = [\"us-east-1\"]\nresources = [\"prod\"]",
            "grants.aws.resources",
        ),
        (
            "actions = [\"ecs:ListClusters\"]\nregions = [\"us-east-1\"]\nendpoint = \"ftp://x\"",
            "grants.aws.endpoint",
        ),
        // Longer than the plugin's wall clock (10 s by default): it could never take effect.
        (
            "actions = [\"ecs:ListClusters\"]\nregions = [\"us-east-1\"]\ntimeout = \"30s\"",
            "grants.aws.timeout = \"30s\" can never be reached: the plugin's limits.wall_timeout is 10s",
        ),
    ] {
        let err = host
            .load(
                "aws-probe",
                &probe_spec(Some(toml::from_str(grant).unwrap()), vec![]),
                Path::new("."),
            )
            .await
            .err()
            .unwrap_or_else(|| panic!("`{grant}` was accepted"));
        let text = format!("{err:#}");
        assert!(text.contains(field), "`{field}` not in: {text}");
    }
}

/// A plugin cannot escape `resources` by naming things instead of giving ARNs: under an ARN
/// grant, ECS names are expanded to the ARNs AWS resolves them to (with `account` and the
/// request's region) and checked; without `account` they are refused; ELBv2 `Names` are
/// refused. Nothing refused reaches AWS, and granted names still work.
#[tokio::test]
async fn bare_names_cannot_escape_an_arn_grant() {
    let Some(moto) = Moto::start() else { return };
    moto.boto("ecs = client('ecs')\nfor c in ['prod', 'staging']: ecs.create_cluster(clusterName=c)\nprint('null')");
    let (host, _cache) = fresh_host();
    let scoped = |extra: &str| {
        probe_spec(
            Some(grant(
                &moto.endpoint(),
                &format!(
                    "resources = [\"arn:aws:ecs:us-east-1:123456789012:*/staging*\"]\n{extra}"
                ),
            )),
            vec![],
        )
    };
    // No account: a bare name cannot be scoped, so it is refused.
    let no_account = Probe::new(&host, scoped("")).await;
    let answer = no_account
        .call(ecs("DescribeClusters", json!({"clusters": ["prod"]})))
        .await;
    assert_refused(
        &answer,
        "denied",
        "plugin `aws-probe` names `prod` in `clusters` without an ARN, which grants.aws.resources cannot scope: set grants.aws.account of [plugins.aws-probe]",
    );
    // With the account: the name becomes the ARN AWS acts on, and that ARN is checked.
    let probe = Probe::new(&host, scoped("account = \"123456789012\"")).await;
    for (action, body, arn) in [
        (
            "DescribeClusters",
            json!({"clusters": ["prod"]}),
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        ),
        (
            "DescribeServices",
            json!({"cluster": "prod", "services": ["web"]}),
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        ),
        (
            "DescribeTaskDefinition",
            json!({"taskDefinition": "web:1"}),
            "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1",
        ),
    ] {
        let answer = probe.call(ecs(action, body)).await;
        assert_refused(
            &answer,
            "denied",
            &format!("may not touch `{arn}`: add a pattern matching it to grants.aws.resources of [plugins.aws-probe]"),
        );
    }
    // A granted cluster does not carry a path out of it in a name.
    let answer = probe
        .call(ecs(
            "UpdateService",
            json!({"cluster": "staging", "service": "../prod/web", "desiredCount": 0}),
        ))
        .await;
    assert_refused(
        &answer,
        "denied",
        "passed `../prod/web` in `service`, which is neither a resource name nor an ARN",
    );
    // ELBv2 names have no ARN without an id: refused, pointing at the ARN parameters.
    let answer = probe
        .call(elbv2("DescribeLoadBalancers", &[("Names.member.1", "web")]))
        .await;
    assert_refused(
        &answer,
        "denied",
        "names `web` in `Names.member.1` without an ARN",
    );
    // A granted name goes through, in parallel with a refused one; the host keeps working.
    let (ok, refused) = tokio::join!(
        probe.call(ecs("DescribeClusters", json!({"clusters": ["staging"]}))),
        no_account.call(ecs("DescribeClusters", json!({"clusters": ["staging"]}))),
    );
    assert_eq!(ok["ok"]["status"], 200, "{ok}");
    assert_eq!(refused["err"], "denied", "{refused}");
    // A malformed account is refused at load, naming the field.
    let err = host
        .load("aws-probe", &scoped("account = \"12345\""), Path::new("."))
        .await
        .err()
        .expect("a malformed account must not load");
    assert!(format!("{err:#}").contains("grants.aws.account"), "{err:#}");
}
