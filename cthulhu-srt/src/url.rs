//! `srt://` destination URLs, in the query syntax of libsrt's tools:
//! `srt://HOST:PORT?streamid=...&passphrase=...&pbkeylen=16&latency=200`.
//!
//! Understood parameters: `streamid`, `passphrase` (10 to 79 characters, as libsrt
//! requires), `pbkeylen` (0, 16, 24 or 32), `latency` (milliseconds, as in
//! `srt-live-transmit`; ffmpeg's own option counts microseconds, ours does not),
//! `mode=caller` (the only mode for a destination), `connect_timeout` (ms).
//! Refused with a clear reason: listener and rendezvous modes, `transtype=file`,
//! `packetfilter` (FEC is not supported by the SRT library underneath). Unknown
//! parameters are refused too, so a typo does not silently change nothing.

use std::fmt;
use std::time::Duration;

use cthulhu_core::Secret;
use cthulhu_core::supervisor::redact_url;

/// A parsed `srt://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtUrl {
    /// Host name or address.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// The stream id to send, if any.
    pub stream_id: Option<Secret>,
    /// The passphrase, if encrypted.
    pub passphrase: Option<Secret>,
    /// The key length asked for (16, 24 or 32 bytes); None: the default, 16.
    pub key_size: Option<u16>,
    /// The latency, if given.
    pub latency: Option<Duration>,
    /// How long connecting may take, if given.
    pub connect_timeout: Option<Duration>,
    raw: Secret,
}

/// Why an `srt://` URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SRT URL {url}: {reason}")]
pub struct SrtUrlError {
    /// The URL with its secrets hidden.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

impl SrtUrl {
    /// Parses a destination URL.
    ///
    /// SRT URLs have no fragment: a `#` is part of the query, as in the
    /// access-control stream id `streamid=#!::r=live/a,m=publish` that ffmpeg,
    /// OBS and vMix take unencoded. It may also be percent-encoded (`%23`).
    pub fn parse(s: &str) -> Result<Self, SrtUrlError> {
        let fail = |reason: String| SrtUrlError {
            url: redact_url(s),
            reason,
        };
        let escaped = s.replace('#', "%23");
        let u = url::Url::parse(&escaped).map_err(|e| fail(e.to_string()))?;
        if u.scheme() != "srt" {
            return Err(fail(format!("scheme {:?} is not srt", u.scheme())));
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(fail("no host".into())),
        };
        let port = u.port().ok_or_else(|| fail("no port".into()))?;
        if !(u.path().is_empty() || u.path() == "/") {
            return Err(fail(
                "SRT URLs have no path: give the stream as ?streamid=...".into(),
            ));
        }
        let mut out = SrtUrl {
            host,
            port,
            stream_id: None,
            passphrase: None,
            key_size: None,
            latency: None,
            connect_timeout: None,
            raw: Secret::new(s),
        };
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in u.query_pairs() {
            if seen.iter().any(|s| *s == k) {
                return Err(fail(format!("{k} given twice")));
            }
            seen.push(k.to_string());
            match k.as_ref() {
                "streamid" => out.stream_id = Some(Secret::new(v.as_ref())),
                "passphrase" => {
                    let n = v.chars().count();
                    if !(10..=79).contains(&n) {
                        return Err(fail(format!(
                            "the passphrase must have 10 to 79 characters, it has {n}"
                        )));
                    }
                    out.passphrase = Some(Secret::new(v.as_ref()));
                }
                "pbkeylen" => {
                    out.key_size = match v.as_ref() {
                        "0" => None,
                        "16" => Some(16),
                        "24" => Some(24),
                        "32" => Some(32),
                        other => {
                            return Err(fail(format!(
                                "pbkeylen must be 0, 16, 24 or 32, not {other:?}"
                            )));
                        }
                    };
                }
                "latency" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms <= 60_000)
                        .ok_or_else(|| fail(format!("latency {v:?} is not 0..=60000 ms")))?;
                    out.latency = Some(Duration::from_millis(ms));
                }
                "connect_timeout" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| (1..=600_000).contains(ms))
                        .ok_or_else(|| {
                            fail(format!("connect_timeout {v:?} is not 1..=600000 ms"))
                        })?;
                    out.connect_timeout = Some(Duration::from_millis(ms));
                }
                "mode" => {
                    if v != "caller" {
                        return Err(fail(format!(
                            "mode {v:?}: a destination is always an SRT caller (mode=caller)"
                        )));
                    }
                }
                "transtype" => {
                    if v != "live" {
                        return Err(fail(format!(
                            "transtype {v:?}: only live mode is supported"
                        )));
                    }
                }
                "packetfilter" => {
                    return Err(fail(
                        "packetfilter (FEC) is not supported by the SRT implementation".into(),
                    ));
                }
                other => return Err(fail(format!("unknown parameter {other:?}"))),
            }
        }
        if out.key_size.is_some() && out.passphrase.is_none() {
            return Err(fail("pbkeylen needs a passphrase".into()));
        }
        Ok(out)
    }

    /// The URL with its stream id key and passphrase hidden, for logs.
    pub fn redacted(&self) -> String {
        redact_url(self.raw.expose())
    }
}

impl fmt::Debug for SrtUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unencoded_access_control_stream_id() {
        let u =
            SrtUrl::parse("srt://127.0.0.1:9000?streamid=#!::r=live/a,m=publish,s=k1&latency=80")
                .unwrap();
        assert_eq!(
            u.stream_id.as_ref().map(Secret::expose),
            Some("#!::r=live/a,m=publish,s=k1")
        );
        assert_eq!(u.latency, Some(Duration::from_millis(80)));
        assert!(!format!("{u:?}").contains("k1"));
    }

    #[test]
    fn full_url() {
        let u = SrtUrl::parse(
            "srt://127.0.0.1:9000?streamid=%23!%3A%3Ar%3Dlive%2Fa%2Cm%3Dpublish&passphrase=0123456789ab&pbkeylen=32&latency=250&mode=caller",
        )
        .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 9000));
        assert_eq!(
            u.stream_id.as_ref().map(Secret::expose),
            Some("#!::r=live/a,m=publish")
        );
        assert_eq!(
            u.passphrase.as_ref().map(Secret::expose),
            Some("0123456789ab")
        );
        assert_eq!(u.key_size, Some(32));
        assert_eq!(u.latency, Some(Duration::from_millis(250)));
        assert!(!format!("{u:?}").contains("0123456789ab"));
    }

    #[test]
    fn plain_and_ipv6() {
        let u = SrtUrl::parse("srt://example.com:7001").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.stream_id.is_none()),
            ("example.com", 7001, true)
        );
        let u = SrtUrl::parse("srt://[::1]:7001?streamid=live/x").unwrap();
        assert_eq!(u.host, "::1");
    }

    #[test]
    fn refusals() {
        for bad in [
            "rtmp://a:1",
            "srt://a",
            "srt://a:1/path",
            "srt://a:1?mode=listener",
            "srt://a:1?transtype=file",
            "srt://a:1?packetfilter=fec",
            "srt://a:1?passphrase=short",
            "srt://a:1?pbkeylen=16",
            "srt://a:1?passphrase=0123456789&pbkeylen=20",
            "srt://a:1?latency=abc",
            "srt://a:1?bogus=1",
            "srt://a:1?latency=1&latency=2",
        ] {
            let e = SrtUrl::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
        let e = SrtUrl::parse("srt://a:1?passphrase=tooshort1&x=1").unwrap_err();
        assert!(!e.to_string().contains("tooshort1"), "{e}");
    }
}
