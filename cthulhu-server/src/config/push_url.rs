//! [`PushUrl`]: a checked RTMP(S) push destination.
//!
//! Parsing and checking is [`RtmpUrl::parse`]'s job; this wrapper adds what the config
//! needs on top: the URL as written, and a redacted form for `Debug` and `Display`.

use std::fmt;

use cthulhu_core::supervisor::redact_url;
use cthulhu_rtmp::{RtmpUrl, UrlError};

/// A push destination URL, `rtmp://host[:port]/app/KEY` or `rtmps://…`, as written in
/// the config (surrounding whitespace removed) together with its parsed form.
///
/// The stream key is the last path segment plus the query string, if any, since
/// platforms put tokens there. `Debug` and `Display` print the
/// [redacted](Self::redacted) form.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PushUrl {
    raw: String,
    rtmp: RtmpUrl,
}

impl PushUrl {
    /// Parses and checks a push URL; see [`RtmpUrl::parse`] for what is refused.
    pub(crate) fn parse(raw: &str) -> Result<Self, UrlError> {
        let raw = raw.trim();
        Ok(Self {
            rtmp: RtmpUrl::parse(raw)?,
            raw: raw.to_owned(),
        })
    }

    /// The parsed destination, as the RTMP push client takes it.
    pub(crate) fn rtmp(&self) -> &RtmpUrl {
        &self.rtmp
    }

    /// The URL with the stream key replaced by `***`, for logs and the console. Host and
    /// port are shown as written: `rtmps://host:443/rtmp/***`, `rtmp://host/live2/***`.
    pub(crate) fn redacted(&self) -> String {
        // The key is the last segment and the whole query, so the query goes before
        // redact_url hides the last segment (it would keep the parameter names).
        // Credentials and fragments never get past RtmpUrl::parse.
        let without_query = self
            .raw
            .split_once('?')
            .map_or(&*self.raw, |(base, _)| base);
        redact_url(without_query)
    }

    /// The full URL as written, stream key included. Never log it.
    pub(crate) fn as_str(&self) -> &str {
        &self.raw
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn youtube_url() {
        let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        let r = u.rtmp();
        assert!(!r.tls);
        assert_eq!(r.host, "a.rtmp.youtube.com");
        assert_eq!(r.port, 1935);
        assert_eq!(r.app, "live2");
        assert_eq!(r.key, "abcd-efgh-ijkl");
        assert_eq!(u.redacted(), "rtmp://a.rtmp.youtube.com/live2/***");
        assert_eq!(u.as_str(), "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl");
    }

    #[test]
    fn rtmps_with_port_nested_app_and_query() {
        let u =
            PushUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=b").unwrap();
        assert!(u.rtmp().tls);
        assert_eq!(u.rtmp().port, 443);
        assert_eq!(u.rtmp().app, "rtmp");
        assert_eq!(u.rtmp().key, "FB-123?s_bl=1&a=b");
        assert_eq!(u.redacted(), "rtmps://live-api-s.facebook.com:443/rtmp/***");

        let u = PushUrl::parse("rtmps://edge.example.com/app/inst/key").unwrap();
        assert_eq!(u.rtmp().port, 443);
        assert_eq!(u.rtmp().app, "app/inst");
        assert_eq!(u.rtmp().key, "key");
        assert_eq!(u.redacted(), "rtmps://edge.example.com/app/inst/***");

        let u = PushUrl::parse("rtmp://10.0.0.1:1936/live/k").unwrap();
        assert_eq!((u.rtmp().host.as_str(), u.rtmp().port), ("10.0.0.1", 1936));
    }

    #[test]
    fn keeps_the_trimmed_url_as_written() {
        let u = PushUrl::parse("  rtmp://[::1]:1936/live/k?t=1 \n").unwrap();
        assert_eq!(u.as_str(), "rtmp://[::1]:1936/live/k?t=1");
        assert_eq!(u.redacted(), "rtmp://[::1]:1936/live/***");
        assert_eq!(
            u.rtmp(),
            &RtmpUrl::parse("rtmp://[::1]:1936/live/k?t=1").unwrap()
        );
    }

    #[test]
    fn debug_and_display_hide_the_key() {
        let u = PushUrl::parse("rtmp://host/live/topsecret?tok=alsosecret").unwrap();
        for shown in [format!("{u:?}"), format!("{u}")] {
            assert!(!shown.contains("topsecret"), "{shown}");
            assert!(!shown.contains("alsosecret"), "{shown}");
            assert!(!shown.contains("tok"), "{shown}");
        }
    }

    #[test]
    fn rejects_bad_urls() {
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
            ("rtmp://host/app/key#x", UrlError::Fragment),
            ("rtmp://host", UrlError::Incomplete),
            ("rtmp://host/", UrlError::Incomplete),
            ("rtmp://host/key", UrlError::Incomplete),
            ("rtmp://host/app/", UrlError::Incomplete),
            ("rtmp://host//key", UrlError::Incomplete),
            ("rtmp://host/app/?token", UrlError::Incomplete),
        ];
        for (raw, want) in cases {
            assert_eq!(PushUrl::parse(raw), Err(want), "{raw}");
        }
        assert!(matches!(
            PushUrl::parse("not a url"),
            Err(UrlError::Syntax(_))
        ));
        assert!(matches!(
            PushUrl::parse("rtmp://host:99999/a/k"),
            Err(UrlError::Syntax(_))
        ));
    }
}
