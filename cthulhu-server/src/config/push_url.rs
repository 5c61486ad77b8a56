//! [`PushUrl`]: a checked push destination, RTMP(S) or SRT.
//!
//! Parsing and checking is [`RtmpUrl::parse`]'s and [`SrtUrl::parse`]'s job; this
//! wrapper adds what the config needs on top: the URL as written, and a redacted form
//! for `Debug` and `Display`.

use std::fmt;

use cthulhu_core::supervisor::redact_url;
use cthulhu_rtmp::{RtmpUrl, UrlError};
use cthulhu_srt::{SrtUrl, SrtUrlError};

/// Why a push URL was refused (never quoting a key).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushUrlError {
    /// An `rtmp://`/`rtmps://` URL (or another scheme) that RTMP refused.
    #[error(transparent)]
    Rtmp(#[from] UrlError),
    /// An `srt://` URL that SRT refused.
    #[error(transparent)]
    Srt(#[from] SrtUrlError),
}

/// The parsed destination.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PushTarget {
    /// `rtmp://` or `rtmps://`.
    Rtmp(RtmpUrl),
    /// `srt://`.
    Srt(SrtUrl),
}

/// A push destination URL, `rtmp://host[:port]/app/KEY`, `rtmps://…` or
/// `srt://host:port?streamid=…&passphrase=…`, as written in the config (surrounding
/// whitespace removed) together with its parsed form.
///
/// For RTMP the stream key is the last path segment plus the query string, if any,
/// since platforms put tokens there; for SRT every query value is hidden. `Debug` and
/// `Display` print the [redacted](Self::redacted) form.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PushUrl {
    raw: String,
    target: PushTarget,
}

impl PushUrl {
    /// Parses and checks a push URL; see [`RtmpUrl::parse`] and [`SrtUrl::parse`] for
    /// what is refused.
    pub(crate) fn parse(raw: &str) -> Result<Self, PushUrlError> {
        let raw = raw.trim();
        let target = if raw
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("srt://"))
        {
            PushTarget::Srt(SrtUrl::parse(raw)?)
        } else {
            PushTarget::Rtmp(RtmpUrl::parse(raw)?)
        };
        Ok(Self {
            target,
            raw: raw.to_owned(),
        })
    }

    /// The parsed destination.
    pub(crate) fn target(&self) -> &PushTarget {
        &self.target
    }

    /// The RTMP destination, if this is one.
    #[cfg(test)]
    pub(crate) fn rtmp(&self) -> Option<&RtmpUrl> {
        match &self.target {
            PushTarget::Rtmp(r) => Some(r),
            PushTarget::Srt(_) => None,
        }
    }

    /// The URL with the stream key replaced by `***`, for logs and the console. Host and
    /// port are shown as written: `rtmps://host:443/rtmp/***`, `rtmp://host/live2/***`,
    /// `srt://host:9000?streamid=***&passphrase=***`.
    pub(crate) fn redacted(&self) -> String {
        if let PushTarget::Srt(u) = &self.target {
            return u.redacted();
        }
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    impl PushUrl {
        fn r(&self) -> &RtmpUrl {
            self.rtmp().unwrap()
        }
    }

    #[test]
    fn youtube_url() {
        let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        let r = u.r();
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
        assert!(u.r().tls);
        assert_eq!(u.r().port, 443);
        assert_eq!(u.r().app, "rtmp");
        assert_eq!(u.r().key, "FB-123?s_bl=1&a=b");
        assert_eq!(u.redacted(), "rtmps://live-api-s.facebook.com:443/rtmp/***");

        let u = PushUrl::parse("rtmps://edge.example.com/app/inst/key").unwrap();
        assert_eq!(u.r().port, 443);
        assert_eq!(u.r().app, "app/inst");
        assert_eq!(u.r().key, "key");
        assert_eq!(u.redacted(), "rtmps://edge.example.com/app/inst/***");

        let u = PushUrl::parse("rtmp://10.0.0.1:1936/live/k").unwrap();
        assert_eq!((u.r().host.as_str(), u.r().port), ("10.0.0.1", 1936));
    }

    #[test]
    fn keeps_the_trimmed_url_as_written() {
        let u = PushUrl::parse("  rtmp://[::1]:1936/live/k?t=1 \n").unwrap();
        assert_eq!(u.as_str(), "rtmp://[::1]:1936/live/k?t=1");
        assert_eq!(u.redacted(), "rtmp://[::1]:1936/live/***");
        assert_eq!(
            u.r(),
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
            match PushUrl::parse(raw) {
                Err(PushUrlError::Rtmp(e)) => assert_eq!(e, want, "{raw}"),
                other => panic!("{raw}: {:?}", other.map(|u| u.redacted())),
            }
        }
        for raw in ["not a url", "rtmp://host:99999/a/k"] {
            assert!(
                matches!(
                    PushUrl::parse(raw),
                    Err(PushUrlError::Rtmp(UrlError::Syntax(_)))
                ),
                "{raw}"
            );
        }
        for raw in [
            "srt://host",
            "srt://host:9000?mode=listener",
            "srt://host:9000?packetfilter=fec",
            "srt://host:9000?passphrase=short",
        ] {
            assert!(
                matches!(PushUrl::parse(raw), Err(PushUrlError::Srt(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn srt_destination() {
        let u = PushUrl::parse(
            "srt://127.0.0.1:9001?streamid=live/x&passphrase=0123456789abc&pbkeylen=32",
        )
        .unwrap();
        assert!(u.rtmp().is_none());
        let PushTarget::Srt(srt) = u.target() else {
            panic!("not SRT")
        };
        assert_eq!(
            (srt.host.as_str(), srt.port, srt.key_size),
            ("127.0.0.1", 9001, Some(32))
        );
        assert_eq!(
            u.redacted(),
            "srt://127.0.0.1:9001?streamid=***&passphrase=***&pbkeylen=***"
        );
        assert!(!format!("{u:?} {u}").contains("0123456789abc"));
    }
}
