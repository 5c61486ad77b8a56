//! RTMP destination URLs: `rtmp[s]://host[:port]/app[/inst]/KEY[?query]`.

use std::fmt;

use crate::error::RtmpError;

/// A parsed RTMP or RTMPS URL whose last path segment is the stream key.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// Whether to use TLS (`rtmps://`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (default 1935 for RTMP, 443 for RTMPS).
    pub port: u16,
    /// The application: the path before the last segment (may contain `/`).
    pub app: String,
    /// The stream key: the last path segment, with the query string if any.
    pub key: String,
}

impl RtmpUrl {
    /// Parses a destination URL.
    pub fn parse(s: &str) -> Result<Self, RtmpError> {
        let u =
            url::Url::parse(s).map_err(|e| RtmpError::InvalidUrl(format!("{}: {e}", redact(s))))?;
        let tls = match u.scheme() {
            "rtmp" => false,
            "rtmps" => true,
            other => {
                return Err(RtmpError::InvalidUrl(format!(
                    "{}: scheme {other:?} is not rtmp or rtmps",
                    redact(s)
                )));
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| RtmpError::InvalidUrl(format!("{}: no host", redact(s))))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = u.port().unwrap_or(if tls { 443 } else { 1935 });
        let path = u.path().trim_start_matches('/');
        let (app, key) = path
            .rsplit_once('/')
            .filter(|(a, k)| !a.is_empty() && !k.is_empty())
            .ok_or_else(|| {
                RtmpError::InvalidUrl(format!(
                    "{}: expected rtmp://host/app/KEY (an app and a stream key)",
                    redact(s)
                ))
            })?;
        let mut key = key.to_owned();
        if let Some(q) = u.query() {
            key.push('?');
            key.push_str(q);
        }
        Ok(Self {
            tls,
            host,
            port,
            app: app.to_owned(),
            key,
        })
    }

    /// The `tcUrl` sent in `connect`: the URL up to and including the app.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.app)
    }

    /// The URL with the stream key replaced by `***`, safe for logs.
    pub fn redacted(&self) -> String {
        format!("{}/***", self.tc_url())
    }
}

impl fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtmpUrl({})", self.redacted())
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

pub use cthulhu_core::supervisor::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_platform_urls() {
        let u = RtmpUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.port,
                u.app.as_str(),
                u.key.as_str()
            ),
            (false, "a.rtmp.youtube.com", 1935, "live2", "abcd-efgh-ijkl")
        );
        assert_eq!(u.tc_url(), "rtmp://a.rtmp.youtube.com:1935/live2");
        let f =
            RtmpUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=b").unwrap();
        assert!(f.tls);
        assert_eq!(f.key, "FB-123?s_bl=1&a=b");
        assert_eq!(f.redacted(), "rtmps://live-api-s.facebook.com:443/rtmp/***");
        let t = RtmpUrl::parse("rtmp://127.0.0.1:1936/app/inst/key").unwrap();
        assert_eq!(
            (t.app.as_str(), t.key.as_str(), t.port),
            ("app/inst", "key", 1936)
        );
        assert_eq!(RtmpUrl::parse("rtmps://x.example/app/k").unwrap().port, 443);
    }

    #[test]
    fn rejects_bad_urls_without_leaking_keys() {
        for bad in [
            "http://x/app/secret1",
            "rtmp://x/secret1",
            "rtmp:///app/secret1",
            "nonsense",
        ] {
            let e = RtmpUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret1"), "{e}");
        }
    }

    #[test]
    fn redact_hides_key_and_query() {
        assert!(!redact("rtmp://h/app/key?x=1").contains("key"));
        assert_eq!(redact("rtmp://h:1/a/b/key"), "rtmp://h:1/a/b/***");
        assert_eq!(redact("rtmp://host"), "rtmp://host");
    }
}
