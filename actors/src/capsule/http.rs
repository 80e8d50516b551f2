//! `http_request`: one HTTP request of a capsule, made on the capsule's thread with a
//! blocking client (ureq, with rustls), within the call's deadline. Redirects are followed
//! here, not by the client, so that every hop is checked like the first:
//!
//! 1. the URL is parsed (`http` or `https`, a host, no credentials in it);
//! 2. the capability store is asked for `net:http:<scheme>://<host>:<port><path>` (a denial
//!    is audited there);
//! 3. the host is resolved here (a lookup bounded by the deadline, and by [`MAX_LOOKUPS`] at
//!    once in the whole daemon); if any address is not public (loopback, private,
//!    link-local, ...), the store is asked again for the access marked private, which only a
//!    grant naming the host exactly allows;
//! 4. the client connects to exactly those addresses (a resolver pinned to them), so that a
//!    second lookup cannot lead elsewhere (DNS rebinding); no proxy is used;
//! 5. a redirect leads back to 1 with the next URL (at most [`MAX_REDIRECTS`]; `303`, and a
//!    `301`/`302` of a `POST`, become a `GET` without body; credentials are dropped when the
//!    origin changes).
//!
//! Every hop that reached the network is audited with its method, scheme, host, port and
//! path (never the query, headers or bodies) and its status and size, or its error.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ureq::http::{HeaderName, HeaderValue, Method, Request};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use url::Url;

use super::host::HostError;
use crate::caps::resource::{HttpAccess, default_port};

/// Most redirects one request follows.
pub const MAX_REDIRECTS: usize = 5;
/// Largest request body.
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
/// Largest response body (less when the capsule's memory is smaller: at most half of it).
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
/// Most request headers, and most bytes of them in all.
pub const MAX_HEADERS: usize = 64;
/// See [`MAX_HEADERS`].
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Name lookups running at once in the daemon (each on a thread of its own, which outlives
/// a call whose deadline passes first); one more fails at once with `-5`.
pub const MAX_LOOKUPS: usize = 16;

static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// Headers a capsule may not set: the client writes them, or they would change what the
/// grant was checked against.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
];

/// Headers dropped when a redirect changes the origin.
const CREDENTIALS: &[&str] = &["authorization", "cookie"];

/// What the guest passes: `{method, url, headers, body, timeout_ms}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestIn {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<serde_bytes::ByteBuf>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn get() -> String {
    "GET".into()
}

/// What the guest gets: `{status, headers, body}`.
#[derive(Debug, Serialize)]
struct ResponseOut {
    status: u16,
    headers: BTreeMap<String, String>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// A request checked and ready for its first hop.
#[derive(Debug)]
pub struct Prepared {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// Decodes and checks the guest's request map.
///
/// # Errors
///
/// [`HostError::Invalid`] for a malformed map, method, URL or header,
/// [`HostError::TooLarge`] past a bound.
pub fn prepare(bytes: &[u8]) -> Result<Prepared, HostError> {
    let request: RequestIn = rmp_serde::from_slice(bytes).map_err(|_| HostError::Invalid)?;
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "OPTIONS" => Method::OPTIONS,
        _ => return Err(HostError::Invalid),
    };
    let url = parse_url(&request.url)?;
    if request.headers.len() > MAX_HEADERS
        || request
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            > MAX_HEADER_BYTES
    {
        return Err(HostError::TooLarge);
    }
    let mut headers = Vec::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|_| HostError::Invalid)?;
        if RESERVED.contains(&name.as_str()) {
            return Err(HostError::Invalid);
        }
        let value = HeaderValue::try_from(value.as_str()).map_err(|_| HostError::Invalid)?;
        headers.push((name, value));
    }
    let body = request
        .body
        .map(serde_bytes::ByteBuf::into_vec)
        .unwrap_or_default();
    if body.len() > MAX_REQUEST_BODY {
        return Err(HostError::TooLarge);
    }
    Ok(Prepared {
        method,
        url,
        headers,
        body,
        timeout: request.timeout_ms.map(Duration::from_millis),
    })
}

/// An absolute `http`/`https` URL with a host and no credentials.
fn parse_url(text: &str) -> Result<Url, HostError> {
    let url = Url::parse(text).map_err(|_| HostError::Invalid)?;
    let fits = default_port(url.scheme()).is_some()
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none();
    if fits {
        Ok(url)
    } else {
        Err(HostError::Invalid)
    }
}

/// The access one hop to `url` asks for (not yet marked private).
pub fn access(url: &Url) -> HttpAccess {
    HttpAccess {
        scheme: url.scheme().to_owned(),
        host: url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: url.port_or_known_default().unwrap_or_default(),
        path: url.path().to_owned(),
        private: false,
    }
}

/// How a hop is named in the audit log: no query, no credentials.
pub fn audit_target(method: &Method, url: &Url) -> String {
    format!("{method} {}", access(url).url())
}

/// Whether `ip` is an address of the public internet (not loopback, private, link-local,
/// shared, documentation, multicast, unspecified or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || s[0] == 0
                || s[0] == 0x0100)
        }
    }
}

/// The addresses of `url`'s host (an IP literal is its own), looked up on a thread of its
/// own so that the lookup cannot outlast `timeout`.
///
/// # Errors
///
/// [`HostError::Failed`] when the name does not resolve in time, or too many lookups run.
pub fn resolve(url: &Url, timeout: Duration) -> Result<Vec<SocketAddr>, HostError> {
    let port = url.port_or_known_default().ok_or(HostError::Invalid)?;
    match url.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Ipv6(ip)) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Domain(_)) => {}
        None => return Err(HostError::Invalid),
    }
    let name = format!("{}:{port}", url.host_str().unwrap_or_default());
    if LOOKUPS.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
        LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("{MAX_LOOKUPS} name lookups already run; one more fails");
        return Err(HostError::Failed);
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("astrid-lookup".into())
        .spawn(move || {
            let found = name
                .to_socket_addrs()
                .map(|addrs| addrs.take(16).collect::<Vec<_>>());
            LOOKUPS.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(found);
        });
    if spawned.is_err() {
        LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        return Err(HostError::Failed);
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        _ => Err(HostError::Failed),
    }
}

/// A resolver that answers with addresses already checked.
#[derive(Debug)]
struct Pinned(Vec<SocketAddr>);

impl Resolver for Pinned {
    fn resolve(
        &self,
        _: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for addr in self.0.iter().take(16) {
            out.push(*addr);
        }
        Ok(out)
    }
}

/// What one hop gave.
#[derive(Debug)]
pub enum Hop {
    /// A final response, encoded for the guest, with its status and body size.
    Done {
        /// The MessagePack `{status, headers, body}`.
        encoded: Vec<u8>,
        /// Its status.
        status: u16,
        /// Bytes of body.
        size: usize,
    },
    /// A redirect to follow.
    Redirect {
        /// Its status.
        status: u16,
        /// The next URL.
        to: Url,
    },
}

impl Prepared {
    /// The URL of the next hop.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The method of the next hop.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Makes one hop to the checked `addrs`, within `deadline` (and the request's own
    /// timeout); a redirect is returned, not followed, when `follow` is true.
    ///
    /// # Errors
    ///
    /// [`HostError::TooLarge`] for a body over `max_body`, [`HostError::Failed`] for a
    /// connection that fails, drops or outlasts the time, with what happened.
    pub fn hop(
        &self,
        addrs: Vec<SocketAddr>,
        deadline: Instant,
        max_body: usize,
        follow: bool,
    ) -> Result<Hop, (HostError, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = self.timeout.map_or(left, |t| t.min(left));
        if timeout.is_zero() {
            return Err((HostError::Failed, "the call's deadline passed".into()));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(concat!("astrid/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), Pinned(addrs));
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.url.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(self.body.clone())
            .map_err(|e| (HostError::Invalid, e.to_string()))?;
        let failed = |e: ureq::Error| (HostError::Failed, e.to_string());
        let mut response = agent.run(request).map_err(failed)?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok());
        if let (true, 301 | 302 | 303 | 307 | 308, Some(location)) = (follow, status, location) {
            let to = self
                .url
                .join(location)
                .map_err(|e| (HostError::Failed, format!("a bad redirect: {e}")))?;
            return Ok(Hop::Redirect { status, to });
        }
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(max_body as u64)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => (
                    HostError::TooLarge,
                    format!("the response body is over {limit} bytes"),
                ),
                other => failed(other),
            })?;
        let size = body.len();
        let encoded = rmp_serde::to_vec_named(&ResponseOut {
            status,
            headers,
            body,
        })
        .map_err(|e| (HostError::Failed, e.to_string()))?;
        Ok(Hop::Done {
            encoded,
            status,
            size,
        })
    }

    /// Turns this request into the next hop's after a redirect with `status` to `to`.
    ///
    /// # Errors
    ///
    /// [`HostError::Invalid`] for a URL the request may not go to.
    pub fn redirect(&mut self, status: u16, to: &Url) -> Result<(), HostError> {
        let to = parse_url(to.as_str())?;
        if to.origin() != self.url.origin() {
            self.headers
                .retain(|(name, _)| !CREDENTIALS.contains(&name.as_str()));
        }
        if status == 303 || (matches!(status, 301 | 302) && self.method == Method::POST) {
            if self.method != Method::HEAD {
                self.method = Method::GET;
            }
            self.body.clear();
            self.headers
                .retain(|(name, _)| !name.as_str().starts_with("content-"));
        }
        self.url = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    fn request(map: &[(&str, rmpv::Value)]) -> Vec<u8> {
        let value = rmpv::Value::Map(
            map.iter()
                .map(|(k, v)| (rmpv::Value::from(*k), v.clone()))
                .collect(),
        );
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value).unwrap();
        out
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let ok = prepare(&request(&[("url", "https://api.example.com/x?q=1".into())])).unwrap();
        assert_eq!(ok.method, Method::GET);
        assert_eq!(
            audit_target(&ok.method, &ok.url),
            "GET https://api.example.com:443/x"
        );
        let invalid = |map: &[(&str, rmpv::Value)]| {
            assert_eq!(
                prepare(&request(map)).unwrap_err(),
                HostError::Invalid,
                "{map:?}"
            );
        };
        invalid(&[("url", "ftp://x.com/".into())]);
        invalid(&[("url", "https://user:pw@x.com/".into())]);
        invalid(&[("url", "/relative".into())]);
        invalid(&[("url", "https://x.com/".into()), ("method", "BREW".into())]);
        invalid(&[("url", "https://x.com/".into()), ("extra", 1.into())]);
        invalid(&[("method", "GET".into())]);
        let host_header = rmpv::Value::Map(vec![("Host".into(), "evil".into())]);
        invalid(&[("url", "https://x.com/".into()), ("headers", host_header)]);
        assert_eq!(prepare(b"\xc1").unwrap_err(), HostError::Invalid);
        let many = rmpv::Value::Map(
            (0..=MAX_HEADERS)
                .map(|i| (format!("x-{i}").into(), "v".into()))
                .collect(),
        );
        assert_eq!(
            prepare(&request(&[
                ("url", "https://x.com/".into()),
                ("headers", many)
            ]))
            .unwrap_err(),
            HostError::TooLarge
        );
    }

    #[test]
    fn a_redirect_drops_credentials_across_origins_and_a_303_becomes_a_get() {
        let auth = rmpv::Value::Map(vec![
            ("authorization".into(), "Bearer t".into()),
            ("x-keep".into(), "1".into()),
        ]);
        let mut r = prepare(&request(&[
            ("url", "https://a.example.com/".into()),
            ("method", "POST".into()),
            ("headers", auth),
            ("body", rmpv::Value::Binary(b"data".to_vec())),
        ]))
        .unwrap();
        r.redirect(307, &Url::parse("https://a.example.com/next").unwrap())
            .unwrap();
        assert_eq!(
            (r.method.clone(), r.headers.len(), r.body.len()),
            (Method::POST, 2, 4)
        );
        r.redirect(303, &Url::parse("https://b.example.com/").unwrap())
            .unwrap();
        assert_eq!(
            (r.method.clone(), r.headers.len(), r.body.len()),
            (Method::GET, 1, 0)
        );
        assert!(
            r.redirect(302, &Url::parse("file:///etc/passwd").unwrap())
                .is_err()
        );
    }
}
