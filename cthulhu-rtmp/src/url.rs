//! RTMP destination URLs: `rtmp[s]://host[:port]/app[/inst]/KEY[?query]`.

use std::fmt;

/// Why a string is not a usable RTMP URL.
///
/// Messages never contain the URL or any part of its path, so they are safe to show
/// next to a config key or in a log: the caller says which URL is meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The string does not parse as a URL.
    #[error("not a valid URL ({0})")]
    Syntax(url::ParseError),
    /// The scheme is neither `rtmp` nor `rtmps`.
    #[error("scheme {0:?} is not supported (use rtmp:// or rtmps://)")]
    UnsupportedScheme(String),
    /// There is no host after `://`.
    #[error("the URL has no host (expected rtmp://host/app/KEY)")]
    MissingHost,
    /// The URL carries `user:password@`, which RTMP has no standard way to send.
    #[error("a user name or password in the URL is not supported")]
    Credentials,
    /// The URL has a `#fragment`, which would silently be cut off the stream key.
    #[error("a '#' fragment is not allowed in an RTMP URL")]
    Fragment,
    /// The path lacks the application or the stream key, or has an empty segment.
    #[error("the URL needs an application and a stream key (rtmp://host/app/KEY)")]
    Incomplete,
}

/// A parsed RTMP or RTMPS URL whose last path segment is the stream key.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// Whether to use TLS (`rtmps://`).
    pub tls: bool,
    /// Host name or address, as used to connect and for TLS server name checks: an
    /// IPv6 address is kept without brackets (`::1`). [`Self::tc_url`] and
    /// [`Self::redacted`] put the brackets back.
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
    ///
    /// Refused: schemes other than `rtmp` and `rtmps`, a missing host, `user:password@`,
    /// a `#fragment`, and paths that are not `/app[/inst…]/KEY` with every segment
    /// non-empty. Percent-encoding in the app and key is kept as written.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let u = url::Url::parse(s).map_err(UrlError::Syntax)?;
        let tls = match u.scheme() {
            "rtmp" => false,
            "rtmps" => true,
            other => return Err(UrlError::UnsupportedScheme(other.to_owned())),
        };
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(UrlError::MissingHost),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if u.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        let port = u.port().unwrap_or(if tls { 443 } else { 1935 });
        let path = u.path().strip_prefix('/').unwrap_or(u.path());
        let (app, key) = path.rsplit_once('/').ok_or(UrlError::Incomplete)?;
        if key.is_empty() || app.split('/').any(str::is_empty) {
            return Err(UrlError::Incomplete);
        }
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

    /// The `tcUrl` sent in `connect`: the URL up to and including the app. An IPv6
    /// host is written in brackets: `rtmp://[::1]:1936/app`.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}/{}", self.host, self.port, self.app)
        } else {
            format!("{scheme}://{}:{}/{}", self.host, self.port, self.app)
        }
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
    use crate::error::RtmpError;

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
    fn rejects_bad_urls_with_a_precise_reason() {
        let cases = [
            (
                "http://host/app/key",
                UrlError::UnsupportedScheme("http".into()),
            ),
            (
                "srt://host:9000?streamid=x",
                UrlError::UnsupportedScheme("srt".into()),
            ),
            ("rtmp:///app/key", UrlError::MissingHost),
            ("rtmp://u:p@host/app/key", UrlError::Credentials),
            ("rtmp://u@host/app/key", UrlError::Credentials),
            ("rtmp://:p@host/app/key", UrlError::Credentials),
            ("rtmp://host/app/key#x", UrlError::Fragment),
            ("rtmp://host/app/key#", UrlError::Fragment),
            ("rtmp://host", UrlError::Incomplete),
            ("rtmp://host/", UrlError::Incomplete),
            ("rtmp://host/key", UrlError::Incomplete),
            ("rtmp://host/app/", UrlError::Incomplete),
            ("rtmp://host//key", UrlError::Incomplete),
            ("rtmp://host//app/key", UrlError::Incomplete),
            ("rtmp://host/app//key", UrlError::Incomplete),
            ("rtmp://host/app/?token", UrlError::Incomplete),
        ];
        for (raw, want) in cases {
            assert_eq!(RtmpUrl::parse(raw), Err(want), "{raw}");
        }
        for raw in ["not a url", "rtmp://host:99999/a/k"] {
            assert!(
                matches!(RtmpUrl::parse(raw), Err(UrlError::Syntax(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn error_messages_never_quote_the_url() {
        for bad in [
            "http://x/app/secret1",
            "rtmp://x/secret1",
            "rtmp:///app/secret1",
            "rtmp://secret1:secret1@x/app/k",
            "rtmp://x/app/k#secret1",
            "rtmp://x//secret1",
            "secret1",
        ] {
            let e = RtmpUrl::parse(bad).unwrap_err();
            for shown in [e.to_string(), RtmpError::from(e).to_string()] {
                assert!(!shown.contains("secret1"), "{shown}");
            }
        }
        assert_eq!(
            RtmpError::from(UrlError::MissingHost).to_string(),
            "invalid url: the URL has no host (expected rtmp://host/app/KEY)"
        );
    }

    #[test]
    fn ipv6_host_is_bare_for_connecting_and_bracketed_in_urls() {
        let u = RtmpUrl::parse("rtmp://[::1]:1936/live/k").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1936));
        assert_eq!(u.tc_url(), "rtmp://[::1]:1936/live");
        assert_eq!(u.redacted(), "rtmp://[::1]:1936/live/***");
        assert_eq!(format!("{u}"), "rtmp://[::1]:1936/live/***");
        assert_eq!(format!("{u:?}"), "RtmpUrl(rtmp://[::1]:1936/live/***)");
        // The default port, and the url crate's normalised form of the address.
        let u = RtmpUrl::parse("rtmps://[2001:DB8:0:0::1]/app/inst/k?t=1").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.tc_url(), "rtmps://[2001:db8::1]:443/app/inst");
        assert_eq!(u.redacted(), "rtmps://[2001:db8::1]:443/app/inst/***");
        // IPv4 and names are unchanged.
        let u = RtmpUrl::parse("rtmp://127.0.0.1/live/k").unwrap();
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1935/live");
        let u = RtmpUrl::parse("rtmp://localhost:1936/live/k").unwrap();
        assert_eq!(u.tc_url(), "rtmp://localhost:1936/live");
    }

    #[test]
    fn redact_hides_key_and_query() {
        assert!(!redact("rtmp://h/app/key?x=1").contains("key"));
        assert_eq!(redact("rtmp://h:1/a/b/key"), "rtmp://h:1/a/b/***");
        assert_eq!(redact("rtmp://host"), "rtmp://host");
    }
}
