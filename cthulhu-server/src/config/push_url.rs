//! [`PushUrl`]: a checked RTMP(S) push destination, and [`redact_url`] for logs.
//!
//! The last path segment of a push URL (plus its query) is the destination's stream key:
//! it is kept in a [`Secret`], and every printable form of the URL replaces it with `***`.

use std::fmt;

use url::Url;

use super::Secret;

/// Default port of `rtmp://` destinations.
pub(crate) const RTMP_DEFAULT_PORT: u16 = 1935;
/// Default port of `rtmps://` destinations.
pub(crate) const RTMPS_DEFAULT_PORT: u16 = 443;

/// The protocol of a push destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PushScheme {
    /// Plain RTMP (`rtmp://`), default port 1935.
    Rtmp,
    /// RTMP over TLS (`rtmps://`), default port 443.
    Rtmps,
}

impl PushScheme {
    /// The URL scheme, `rtmp` or `rtmps`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rtmp => "rtmp",
            Self::Rtmps => "rtmps",
        }
    }

    /// The port used when the URL names none.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Self::Rtmp => RTMP_DEFAULT_PORT,
            Self::Rtmps => RTMPS_DEFAULT_PORT,
        }
    }
}

/// Why a string is not a usable push URL. Messages never contain the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PushUrlError {
    /// The string does not parse as a URL.
    #[error("not a valid URL ({0})")]
    Syntax(url::ParseError),
    /// The scheme is neither `rtmp` nor `rtmps`.
    #[error("scheme {0:?} is not supported (use rtmp:// or rtmps://)")]
    UnsupportedScheme(String),
    /// There is no host after `://`.
    #[error("the URL has no host (expected rtmp://host/app/KEY)")]
    MissingHost,
    /// The URL carries `user:password@`.
    #[error("a user name or password in the URL is not supported")]
    Credentials,
    /// The URL has a `#fragment`.
    #[error("a '#' fragment is not allowed in a push URL")]
    Fragment,
    /// The path lacks the application or the stream key segment.
    #[error("the URL needs an application and a stream key (rtmp://host/app/KEY)")]
    Incomplete,
}

/// A push destination URL, `rtmp://host[:port]/app/KEY` or `rtmps://…`.
///
/// `app` is the path minus its last segment and may contain slashes (`live2`, `rtmp`,
/// `app/inst`); `key` is the last segment plus the query string, if any, since
/// platforms put tokens there. Both are kept as written in the URL (percent-encoding
/// is not decoded). `Debug` and `Display` print the [redacted](Self::redacted) form.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PushUrl {
    url: Url,
    scheme: PushScheme,
    port: u16,
    app: String,
    key: Secret,
}

impl PushUrl {
    /// Parses and checks a push URL.
    pub(crate) fn parse(raw: &str) -> Result<Self, PushUrlError> {
        let url = Url::parse(raw.trim()).map_err(PushUrlError::Syntax)?;
        let scheme = match url.scheme() {
            "rtmp" => PushScheme::Rtmp,
            "rtmps" => PushScheme::Rtmps,
            other => return Err(PushUrlError::UnsupportedScheme(other.to_owned())),
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(PushUrlError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(PushUrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(PushUrlError::Fragment);
        }
        let path = url.path().strip_prefix('/').unwrap_or(url.path());
        let (app, last) = path.rsplit_once('/').ok_or(PushUrlError::Incomplete)?;
        if last.is_empty() || app.split('/').any(str::is_empty) {
            return Err(PushUrlError::Incomplete);
        }
        let key = match url.query() {
            Some(query) => format!("{last}?{query}"),
            None => last.to_owned(),
        };
        Ok(Self {
            port: url.port().unwrap_or(scheme.default_port()),
            app: app.to_owned(),
            key: Secret::new(key),
            scheme,
            url,
        })
    }

    /// `rtmp` or `rtmps`.
    pub(crate) fn scheme(&self) -> PushScheme {
        self.scheme
    }

    /// The host name or address, as written (IPv6 in brackets).
    pub(crate) fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The port, defaulting to 1935 for `rtmp` and 443 for `rtmps`.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The RTMP application: the path without its last segment (`live2`, `app/inst`).
    pub(crate) fn app(&self) -> &str {
        &self.app
    }

    /// The stream key: the last path segment plus `?query` if present.
    pub(crate) fn key(&self) -> &Secret {
        &self.key
    }

    /// The URL with the stream key replaced by `***`, for logs and the console.
    pub(crate) fn redacted(&self) -> String {
        redact_url(self.url.as_str())
    }

    /// The full URL, stream key included. Never log it.
    pub(crate) fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl fmt::Debug for PushUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushUrl({})", self.redacted())
    }
}

impl fmt::Display for PushUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Hides the secret parts of a URL-like string for logs: the last path segment and the
/// query become `***`, and so does any `user:password@`. Works on strings that do not
/// parse as URLs too; `rtmp://host/app/KEY?t=1` becomes `rtmp://host/app/***`.
pub(crate) fn redact_url(raw: &str) -> String {
    let (prefix, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(raw.len());
    out.push_str(prefix);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("***");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    if tail.is_empty() {
        return out;
    }
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = &tail[..path_end];
    // Keep everything up to and including the last '/', hide the rest.
    let keep = path.rfind('/').map_or(0, |i| i + 1);
    out.push_str(&path[..keep]);
    if keep == 0 {
        out.push('?');
    }
    out.push_str("***");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests may fail loudly.
mod tests {
    use super::*;

    #[test]
    fn youtube_url() {
        let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        assert_eq!(u.scheme(), PushScheme::Rtmp);
        assert_eq!(u.host(), "a.rtmp.youtube.com");
        assert_eq!(u.port(), 1935);
        assert_eq!(u.app(), "live2");
        assert_eq!(u.key().expose(), "abcd-efgh-ijkl");
        assert_eq!(u.redacted(), "rtmp://a.rtmp.youtube.com/live2/***");
        assert_eq!(u.as_str(), "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl");
    }

    #[test]
    fn rtmps_with_port_nested_app_and_query() {
        let u =
            PushUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=b").unwrap();
        assert_eq!(u.scheme(), PushScheme::Rtmps);
        assert_eq!(u.port(), 443);
        assert_eq!(u.app(), "rtmp");
        assert_eq!(u.key().expose(), "FB-123?s_bl=1&a=b");
        assert_eq!(u.redacted(), "rtmps://live-api-s.facebook.com:443/rtmp/***");

        let u = PushUrl::parse("rtmps://edge.example.com/app/inst/key").unwrap();
        assert_eq!(u.port(), 443);
        assert_eq!(u.app(), "app/inst");
        assert_eq!(u.key().expose(), "key");

        let u = PushUrl::parse("rtmp://10.0.0.1:1936/live/k").unwrap();
        assert_eq!((u.host(), u.port()), ("10.0.0.1", 1936));
    }

    #[test]
    fn debug_and_display_hide_the_key() {
        let u = PushUrl::parse("rtmp://host/live/topsecret?tok=alsosecret").unwrap();
        for shown in [format!("{u:?}"), format!("{u}")] {
            assert!(!shown.contains("topsecret"), "{shown}");
            assert!(!shown.contains("alsosecret"), "{shown}");
        }
    }

    #[test]
    fn rejects_bad_urls() {
        let cases = [
            (
                "http://host/app/key",
                PushUrlError::UnsupportedScheme("http".into()),
            ),
            (
                "srt://host:9000?streamid=x",
                PushUrlError::UnsupportedScheme("srt".into()),
            ),
            ("rtmp:///app/key", PushUrlError::MissingHost),
            ("rtmp://u:p@host/app/key", PushUrlError::Credentials),
            ("rtmp://host/app/key#x", PushUrlError::Fragment),
            ("rtmp://host", PushUrlError::Incomplete),
            ("rtmp://host/", PushUrlError::Incomplete),
            ("rtmp://host/key", PushUrlError::Incomplete),
            ("rtmp://host/app/", PushUrlError::Incomplete),
            ("rtmp://host//key", PushUrlError::Incomplete),
            ("rtmp://host/app/?token", PushUrlError::Incomplete),
        ];
        for (raw, want) in cases {
            assert_eq!(PushUrl::parse(raw), Err(want), "{raw}");
        }
        assert!(matches!(
            PushUrl::parse("not a url"),
            Err(PushUrlError::Syntax(_))
        ));
        assert!(matches!(
            PushUrl::parse("rtmp://host:99999/a/k"),
            Err(PushUrlError::Syntax(_))
        ));
    }

    #[test]
    fn redact_url_cases() {
        let cases = [
            ("rtmp://host/app/KEY", "rtmp://host/app/***"),
            ("rtmp://host:1935/a/b/KEY?x=1", "rtmp://host:1935/a/b/***"),
            ("rtmp://host/KEY", "rtmp://host/***"),
            ("rtmp://host", "rtmp://host"),
            ("rtmp://host?KEY", "rtmp://host?***"),
            ("rtmp://user:pw@host/app/KEY", "rtmp://***@host/app/***"),
            ("srt://host:9000?streamid=KEY", "srt://host:9000?***"),
            ("no-scheme/KEY", "no-scheme/***"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_url(raw), want, "{raw}");
        }
    }
}
