//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host only lets requests through to `scheme://host:port` entries granted to the
//! plugin in TOML; anything else fails with an error naming the missing grant. Credentials
//! for a granted host can be injected by the host, so plugins need not hold them.

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` (`http://host:port/path?query`) with extra headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    send("GET", url, headers, None)
}

/// POST `body` to `url`.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, String> {
    send("POST", url, headers, Some(body))
}

/// Percent-encode a query parameter value.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("invalid URL `{url}`: expected scheme://host[:port]/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(&name.to_string(), &value.as_bytes().to_vec())
            .map_err(|e| format!("invalid header `{name}`: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => Method::Other(other.to_string()),
        })
        .map_err(|_| "invalid method".to_string())?;
    request
        .set_scheme(Some(&match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        }))
        .map_err(|_| "invalid scheme".to_string())?;
    request
        .set_authority(Some(authority))
        .map_err(|_| format!("invalid authority `{authority}`"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| format!("invalid path `{path}`"))?;

    let outgoing_body = request
        .body()
        .map_err(|_| "request body unavailable".to_string())?;
    if let Some(bytes) = body {
        let stream = outgoing_body
            .write()
            .map_err(|_| "request body stream unavailable".to_string())?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing request body: {e:?}"))?;
        }
        drop(stream);
    }
    let future = outgoing_handler::handle(request, None).map_err(|e| describe_error(&e))?;
    OutgoingBody::finish(outgoing_body, None).map_err(|e| describe_error(&e))?;

    let incoming = loop {
        match future.get() {
            Some(result) => {
                break result
                    .map_err(|_| "response already taken".to_string())?
                    .map_err(|e| describe_error(&e))?
            }
            None => future.subscribe().block(),
        }
    };
    let status = incoming.status();
    let body = incoming
        .consume()
        .map_err(|_| "response body unavailable".to_string())?;
    let stream = body
        .stream()
        .map_err(|_| "response stream unavailable".to_string())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("reading response body: {e:?}")),
        }
    }
    drop(stream);
    Ok(Response {
        status,
        body: bytes,
    })
}

fn describe_error(e: &wasi::http::types::ErrorCode) -> String {
    use wasi::http::types::ErrorCode;
    match e {
        ErrorCode::HttpRequestDenied => {
            "request denied by the host: this plugin has no `http` grant for that address; add it to the plugin's `grants.http` in TOML".to_string()
        }
        ErrorCode::ConnectionRefused => "connection refused".to_string(),
        ErrorCode::DnsError(_) => "DNS lookup failed".to_string(),
        ErrorCode::ConnectionTimeout => "connection timed out".to_string(),
        ErrorCode::InternalError(Some(msg)) => msg.clone(),
        other => format!("{other:?}"),
    }
}
