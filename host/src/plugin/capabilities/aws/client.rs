//! The host's side of AWS: credentials and region (the AWS SDK's providers, loaded here and
//! nowhere else), SigV4 signing (`aws-sigv4`, the SDK's own signer), sending, and retries of
//! throttled and 5xx answers with backoff and full jitter inside the call's deadline.

use super::grant::AwsGrant;
use super::AwsFailure;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use quick_xml::events::Event;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Mutex, OnceCell};

/// First retry waits up to this long (full jitter), doubling per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Credentials this close to their expiry are fetched again.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// One plugin's access to AWS: shared by all its instances.
pub struct AwsAccess {
    pub plugin: Arc<str>,
    pub grant: AwsGrant,
    http: reqwest::Client,
    /// The credential provider and default region, made on first use.
    config: OnceCell<Loaded>,
    /// The last credentials handed out by the provider, reused until near their expiry.
    credentials: Mutex<Option<Credentials>>,
}

struct Loaded {
    credentials: SharedCredentialsProvider,
    region: Option<String>,
}

impl std::fmt::Debug for AwsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsAccess")
            .field("plugin", &self.plugin)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// A request as the host sends it: everything but the signature.
pub struct Outgoing {
    /// The IAM service prefix (`cloudwatch`), for messages.
    pub service: String,
    pub region: String,
    pub content_type: &'static str,
    /// `X-Amz-Target` of the JSON protocol.
    pub target: Option<String>,
    pub body: Vec<u8>,
}

/// A 2xx answer.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub request_id: String,
}

impl AwsAccess {
    /// Check a plugin's `grants.aws` at load time (its calls last at most `wall_timeout`) and
    /// prepare its access.
    pub fn from_grant(
        plugin: &str,
        grant: &AwsGrant,
        wall_timeout: Duration,
    ) -> Result<Self, crate::plugin::LoadError> {
        grant
            .check_shape(wall_timeout)
            .map_err(|e| crate::plugin::capabilities::grant_shape_error(plugin, e))?;
        Ok(Self::new(plugin.into(), grant.clone()))
    }

    fn new(plugin: Arc<str>, grant: AwsGrant) -> Self {
        let http = reqwest::Client::builder()
            // A signed request is never replayed elsewhere, and never follows a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with rustls");
        AwsAccess {
            plugin,
            grant,
            http,
            config: OnceCell::new(),
            credentials: Mutex::new(None),
        }
    }

    /// The SDK's default chain (env, profiles, web identity, container and instance
    /// metadata), optionally wrapped in an assumed role. Loaded once per plugin.
    async fn loaded(&self) -> &Loaded {
        self.config
            .get_or_init(|| async {
                let http_client = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(http_client.clone());
                if let Some(profile) = &self.grant.profile {
                    loader = loader.profile_name(profile);
                }
                let config = loader.load().await;
                let region = config.region().map(|r| r.to_string());
                // A profile named in the grant means that profile's credentials, even when the
                // environment has keys (the default chain would prefer those).
                let base = match &self.grant.profile {
                    Some(profile) => Some(SharedCredentialsProvider::new(
                        aws_config::profile::ProfileFileCredentialsProvider::builder()
                            .profile_name(profile)
                            .configure(
                                &aws_config::provider_config::ProviderConfig::without_region()
                                    .with_http_client(http_client),
                            )
                            .build(),
                    )),
                    None => config.credentials_provider(),
                };
                let credentials = match (&self.grant.role_arn, base) {
                    (Some(role), Some(base)) => SharedCredentialsProvider::new(
                        aws_config::sts::AssumeRoleProvider::builder(role)
                            .session_name(format!("dax-{}", self.plugin))
                            .configure(&config)
                            .build_from_provider(base)
                            .await,
                    ),
                    (None, Some(base)) => base,
                    (_, None) => SharedCredentialsProvider::new(NoCredentials),
                };
                Loaded {
                    credentials,
                    region,
                }
            })
            .await
    }

    /// The region of the host's AWS configuration (`AWS_REGION`, the profile's `region`).
    pub async fn default_region(&self) -> Option<String> {
        self.loaded().await.region.clone()
    }

    async fn credentials(&self) -> Result<Credentials, AwsFailure> {
        let mut cached = self.credentials.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = match c.expiry() {
                None => true,
                Some(at) => at > SystemTime::now() + REFRESH_BEFORE_EXPIRY,
            };
            if fresh {
                return Ok(c.clone());
            }
        }
        let provider = &self.loaded().await.credentials;
        let c = provider.provide_credentials().await.map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            AwsFailure::Unavailable(format!(
                "no AWS credentials for plugin `{p}`: {why}; give the host credentials (AWS_ACCESS_KEY_ID, a profile, a role) or fix profile/role_arn in [plugins.{p}.grants.aws]",
                p = self.plugin
            ))
        })?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Where a service's requests go, and the name it is signed for.
    fn endpoint(&self, service: &str, region: &str) -> (String, String) {
        let signing = signing_name(service).unwrap_or(service);
        let url = match &self.grant.endpoint {
            Some(e) => format!("{}/", e.trim_end_matches('/')),
            None => {
                let domain = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                format!("https://{signing}.{region}.{domain}/")
            }
        };
        (url, signing.to_string())
    }

    /// Sign and send, retrying throttling, 5xx and connection failures until `deadline`.
    pub async fn send(&self, out: &Outgoing) -> Result<Answer, AwsFailure> {
        let started = Instant::now();
        let deadline = started + self.grant.timeout();
        let mut attempt: u32 = 0;
        loop {
            let result = self.send_once(out, deadline).await;
            let retryable = match &result {
                Ok(_) => false,
                Err(AwsFailure::Service(e)) => is_retryable(e.status, &e.code),
                Err(AwsFailure::Unavailable(_)) => true,
                Err(_) => false,
            };
            if !retryable {
                return result;
            }
            attempt += 1;
            let cap = BASE_BACKOFF
                .saturating_mul(2u32.saturating_pow(attempt - 1))
                .min(MAX_BACKOFF);
            let wait = rand::rng().random_range(Duration::ZERO..=cap);
            if Instant::now() + wait >= deadline {
                return match result {
                    Err(AwsFailure::Unavailable(m)) => Err(AwsFailure::Unavailable(format!(
                        "{m} (gave up after {attempt} attempts in {:.1}s: raise grants.aws.timeout of [plugins.{}] to retry longer)",
                        started.elapsed().as_secs_f64(),
                        self.plugin
                    ))),
                    other => other,
                };
            }
            tracing::debug!(plugin = %self.plugin, attempt, ?wait, "retrying an AWS call");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(&self, out: &Outgoing, deadline: Instant) -> Result<Answer, AwsFailure> {
        let timeout_message = || {
            AwsFailure::Unavailable(format!(
                "the AWS call took longer than {}: raise grants.aws.timeout of [plugins.{}] if AWS is that slow",
                crate::plugin::spec::duration_str::format(self.grant.timeout()),
                self.plugin
            ))
        };
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(timeout_message)?;
        let credentials = tokio::time::timeout(left, self.credentials())
            .await
            .map_err(|_| timeout_message())??;
        let (url, signing) = self.endpoint(&out.service, &out.region);
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", out.content_type);
        if let Some(target) = &out.target {
            request = request.header("x-amz-target", target);
        }
        let mut request = request
            .body(out.body.clone())
            .map_err(|e| AwsFailure::Invalid(format!("the request: {e}")))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&out.region)
            .name(&signing)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| AwsFailure::Invalid(format!("signing: {e}")))?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.into_iter(),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| AwsFailure::Invalid(format!("signing: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| AwsFailure::Invalid(format!("signing: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        let request = reqwest::Request::try_from(request)
            .map_err(|e| AwsFailure::Invalid(format!("the request: {e}")))?;
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(timeout_message)?;
        let exchange = async {
            let mut response = self.http.execute(request).await.map_err(|e| {
                AwsFailure::Unavailable(format!("sending to {url}: {}", error_chain(&e)))
            })?;
            let status = response.status().as_u16();
            let request_id = ["x-amzn-requestid", "x-amz-request-id"]
                .iter()
                .find_map(|h| response.headers().get(*h)?.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let error_type = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let limit = self.grant.max_response_bytes();
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                AwsFailure::Unavailable(format!("reading the answer: {}", error_chain(&e)))
            })? {
                if bytes.len() + chunk.len() > limit {
                    return Err(AwsFailure::TooLarge(format!(
                        "AWS's answer is larger than {} KiB: narrow the call (filters, MaxResults) or raise grants.aws.max_response_kib of [plugins.{}]",
                        limit / 1024,
                        self.plugin
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            let body = String::from_utf8_lossy(&bytes).into_owned();
            if (200..300).contains(&status) {
                Ok(Answer {
                    status,
                    body,
                    request_id,
                })
            } else {
                Err(AwsFailure::Service(parse_error(
                    status,
                    error_type.as_deref(),
                    &body,
                    request_id,
                )))
            }
        };
        tokio::time::timeout(left, exchange)
            .await
            .map_err(|_| timeout_message())?
    }
}

/// The endpoint prefix and signing name of services whose IAM prefix differs.
fn signing_name(service: &str) -> Option<&'static str> {
    match service {
        "cloudwatch" => Some("monitoring"),
        _ => None,
    }
}

/// Throttling and server-side failures are worth another try; other refusals are not.
pub fn is_retryable(status: u16, code: &str) -> bool {
    const THROTTLING: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    ];
    status >= 500 || status == 429 || THROTTLING.contains(&code)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// AWS's error from either format: JSON (`{"__type": "...#Code", "message": ...}`, or the
/// `x-amzn-ErrorType` header) or XML (`<Error><Code>..</Code><Message>..</Message>`, under
/// `ErrorResponse` or `Response/Errors`).
pub fn parse_error(
    status: u16,
    error_type: Option<&str>,
    body: &str,
    request_id: String,
) -> super::ServiceError {
    // `com.amazonaws.ecs#ClusterNotFoundException`, `Code:http://internal.amazon.com/...`
    let clean = |code: &str| {
        let code = code.rsplit('#').next().unwrap_or(code);
        code.split(':').next().unwrap_or(code).trim().to_string()
    };
    let (mut code, mut message) = (String::new(), String::new());
    let mut xml_request_id = None;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(c) = ["__type", "code", "Code"]
            .iter()
            .find_map(|k| v.get(*k)?.as_str())
        {
            code = clean(c);
        }
        if let Some(m) = ["message", "Message", "errorMessage"]
            .iter()
            .find_map(|k| v.get(*k)?.as_str())
        {
            message = m.to_string();
        }
    } else if body.trim_start().starts_with('<') {
        let mut reader = quick_xml::Reader::from_str(body);
        let mut path: Vec<String> = Vec::new();
        let mut text = String::new();
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                    text.clear();
                }
                Ok(Event::Text(t)) => {
                    text.push_str(&t.decode().unwrap_or_default());
                }
                // `&amp;`, `&#38;`: quick-xml hands references over apart from the text.
                Ok(Event::GeneralRef(r)) => {
                    let reference = format!("&{};", r.decode().unwrap_or_default());
                    text.push_str(&quick_xml::escape::unescape(&reference).unwrap_or_default());
                }
                Ok(Event::End(_)) => {
                    let in_error = path.iter().any(|p| p == "Error");
                    let value = std::mem::take(&mut text).trim().to_string();
                    match path.pop().as_deref() {
                        Some("Code") if in_error && code.is_empty() => code = clean(&value),
                        Some("Message") if in_error && message.is_empty() => message = value,
                        Some("RequestId" | "RequestID") => xml_request_id = Some(value),
                        _ => {}
                    }
                }
                Ok(Event::Eof) | Err(_) => break,
                _ => {}
            }
        }
    }
    if code.is_empty() {
        code = match error_type {
            Some(t) => clean(t),
            None => http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Unknown")
                .replace(' ', ""),
        };
    }
    if message.is_empty() {
        message = body.chars().take(1024).collect();
    }
    super::ServiceError {
        status,
        code,
        message,
        request_id: if request_id.is_empty() {
            xml_request_id.unwrap_or_default()
        } else {
            request_id
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_from_json_and_xml() {
        let e = parse_error(
            400,
            None,
            r#"{"__type":"com.amazonaws.ecs#ClusterNotFoundException","message":"Cluster not found."}"#,
            "r1".into(),
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("ClusterNotFoundException", "Cluster not found.")
        );
        let e = parse_error(
            403,
            None,
            "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match &amp; more</Message></Error><RequestId>abc</RequestId></ErrorResponse>",
            String::new(),
        );
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert_eq!(
            e.message,
            "The request signature we calculated does not match & more"
        );
        assert_eq!(e.request_id, "abc");
        let e = parse_error(
            400,
            None,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>slow down</Message></Error></Errors></Response>",
            String::new(),
        );
        assert!(is_retryable(e.status, &e.code));
        let e = parse_error(
            404,
            Some("ResourceNotFoundException:http://internal.amazon.com/"),
            "",
            String::new(),
        );
        assert_eq!(e.code, "ResourceNotFoundException");
        assert!(!is_retryable(400, "ValidationError"));
        assert!(is_retryable(503, "ServiceUnavailable"));
    }
}

/// The provider when the SDK found no source of credentials at all.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no source of AWS credentials is configured",
            ),
        ))
    }
}
