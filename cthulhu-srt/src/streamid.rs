//! SRT stream ids: what a caller asks for.
//!
//! Two forms are understood:
//! - the SRT access-control syntax, `#!::r=live/NAME,m=publish,s=KEY` (keys `r`
//!   resource, `m` mode, `s` session id used as the stream key, `u` user, `h` host,
//!   `t` type; unknown keys are kept as query parameters);
//! - a bare `live/NAME` (optionally `live/NAME?key=KEY`), which is a play request.
//!
//! Publishing uses the same key as RTMP: `s=KEY`, or OBS style with the key as
//! the resource name (`r=live/KEY,m=publish`). Playing takes an optional play key
//! in `s=`. The parsed form never prints its key; [`redact`] gives a stream id that
//! is safe to log.

use cthulhu_core::{AccessRequest, Action, Protocol, Secret};
use std::net::SocketAddr;

/// The access-control prefix.
const PREFIX: &str = "#!::";
/// The longest stream id SRT carries (the handshake extension's limit).
pub const MAX_STREAM_ID: usize = 512;

/// Why a stream id was refused; each maps to an SRT rejection reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    /// No stream id at all: the caller did not say which stream.
    #[error("no stream id: give one like #!::r=live/NAME,m=publish,s=KEY or live/NAME")]
    Missing,
    /// Longer than SRT allows.
    #[error("stream id longer than {MAX_STREAM_ID} bytes")]
    TooLong,
    /// Not `key=value` pairs, or a key given twice.
    #[error("malformed stream id: {0}")]
    Malformed(String),
    /// The resource is missing or not `APP/NAME`.
    #[error("the resource must be APP/NAME, got {0:?}")]
    Resource(String),
    /// A mode other than `request` or `publish`.
    #[error("unsupported mode {0:?}: use m=publish or m=request")]
    Mode(String),
    /// A type other than `stream` (`file` transfers, `auth` only).
    #[error("unsupported type {0:?}: only live streams (t=stream)")]
    Type(String),
}

/// A parsed stream id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// Publish or play.
    pub action: Action,
    /// The app (`live`).
    pub app: String,
    /// The name, or the key itself for OBS-style publishing.
    pub name: String,
    /// The key from `s=` (or `key=` of a bare id).
    pub key: Option<Secret>,
    /// The user from `u=`, if any.
    pub user: Option<String>,
    /// Other `key=value` pairs (never the key).
    pub query: Vec<(String, String)>,
}

impl StreamRequest {
    /// The request to put to a [`cthulhu_core::Router`].
    pub fn access_request(&self, raw: &str, remote: Option<SocketAddr>) -> AccessRequest {
        AccessRequest {
            protocol: Protocol::Srt,
            action: self.action,
            app: self.app.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            stream_id: Some(redact(raw)),
            remote,
            query: self.query.clone(),
        }
    }
}

/// Parses a caller's stream id.
pub fn parse(stream_id: Option<&str>) -> Result<StreamRequest, StreamIdError> {
    let raw = stream_id.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(StreamIdError::Missing);
    }
    if raw.len() > MAX_STREAM_ID {
        return Err(StreamIdError::TooLong);
    }
    let decoded = decode_if_encoded(raw);
    let raw = decoded.as_deref().unwrap_or(raw);
    match raw.strip_prefix(PREFIX) {
        Some(body) => parse_access_control(body),
        None => parse_bare(raw),
    }
}

fn parse_access_control(body: &str) -> Result<StreamRequest, StreamIdError> {
    let mut resource = None;
    let mut mode = None;
    let mut key = None;
    let mut user = None;
    let mut query: Vec<(String, String)> = Vec::new();
    for pair in body.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            StreamIdError::Malformed(format!("{:?} is not key=value", redact_pair(pair)))
        })?;
        let slot = match k {
            "r" => &mut resource,
            "m" => &mut mode,
            "s" => &mut key,
            "u" => &mut user,
            "t" => {
                if v != "stream" {
                    return Err(StreamIdError::Type(v.to_owned()));
                }
                continue;
            }
            _ => {
                if query.iter().any(|(q, _)| q == k) {
                    return Err(StreamIdError::Malformed(format!("{k:?} given twice")));
                }
                query.push((k.to_owned(), v.to_owned()));
                continue;
            }
        };
        if slot.is_some() {
            return Err(StreamIdError::Malformed(format!("{k:?} given twice")));
        }
        *slot = Some(v.to_owned());
    }
    let action = match mode.as_deref() {
        None | Some("request") => Action::Play,
        Some("publish") => Action::Publish,
        Some(other) => return Err(StreamIdError::Mode(other.to_owned())),
    };
    let resource = resource.ok_or_else(|| StreamIdError::Resource(String::new()))?;
    let (app, name) = split_resource(&resource)?;
    Ok(StreamRequest {
        action,
        app,
        name,
        key: key.filter(|k| !k.is_empty()).map(Secret::new),
        user,
        query,
    })
}

fn parse_bare(raw: &str) -> Result<StreamRequest, StreamIdError> {
    let (resource, q) = raw.split_once('?').unwrap_or((raw, ""));
    let (app, name) = split_resource(resource)?;
    let mut key = None;
    let mut query = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "key" {
            key = Some(Secret::new(v));
        } else {
            query.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(StreamRequest {
        action: Action::Play,
        app,
        name,
        key,
        user: None,
        query,
    })
}

/// `live/NAME` → (`live`, `NAME`); a leading slash is tolerated.
fn split_resource(resource: &str) -> Result<(String, String), StreamIdError> {
    let r = resource.strip_prefix('/').unwrap_or(resource);
    match r.split_once('/') {
        Some((app, name)) if !app.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((app.to_owned(), name.to_owned()))
        }
        _ => Err(StreamIdError::Resource(redact_resource(r))),
    }
}

/// A resource in an error message: the name part may be a key (OBS style).
fn redact_resource(r: &str) -> String {
    match r.split_once('/') {
        Some((app, _)) => format!("{app}/***"),
        None => "***".to_owned(),
    }
}

fn redact_pair(pair: &str) -> String {
    if pair.len() > 24 {
        format!("{}...", pair.chars().take(8).collect::<String>())
    } else {
        pair.to_owned()
    }
}

/// Some senders (ffmpeg before 6.0) pass a percent-encoded `streamid` from their
/// URL on as it is: `%23!%3A%3Ar%3D...`. Decoded when, and only when, it is the
/// encoded access-control prefix.
fn decode_if_encoded(raw: &str) -> Option<String> {
    if !raw
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("%23!%3A%3A"))
    {
        return None;
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b.get(i),
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (Some(b'%'), Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (Some(&c), _, _) => {
                out.push(c);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8(out).ok()
}

/// A stream id that is safe to log: the value of `s=` (and `key=`) is hidden, and
/// for publishing the resource name too (it may be the key, OBS style).
///
/// Anything not in one of the two understood forms is shown only by its length:
/// it might hold a key anywhere.
pub fn redact(raw: &str) -> String {
    let raw = raw.trim();
    let decoded = decode_if_encoded(raw);
    let raw = decoded.as_deref().unwrap_or(raw);
    if let Some(body) = raw.strip_prefix(PREFIX) {
        let publish = body.split(',').any(|p| p == "m=publish");
        let parts: Vec<String> = body
            .split(',')
            .map(|p| match p.split_once('=') {
                Some(("s", _)) => "s=***".to_owned(),
                Some(("r", r)) if publish => format!("r={}", redact_resource(r)),
                _ => p.to_owned(),
            })
            .collect();
        return format!("{PREFIX}{}", parts.join(","));
    }
    let (resource, _) = raw.split_once('?').unwrap_or((raw, ""));
    if raw.is_empty() || split_resource(resource).is_err() {
        return format!("<{} bytes, not shown>", raw.len());
    }
    match raw.split_once('?') {
        Some((resource, q)) => {
            let q: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("key", _)) => "key=***".to_owned(),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{resource}?{}", q.join("&"))
        }
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn access_control_publish() {
        let r = parse(Some("#!::r=live/studio,m=publish,s=sekrit")).unwrap();
        assert_eq!(r.action, Action::Publish);
        assert_eq!((r.app.as_str(), r.name.as_str()), ("live", "studio"));
        assert_eq!(r.key.as_ref().map(Secret::expose), Some("sekrit"));
        assert!(r.query.is_empty());
    }

    #[test]
    fn access_control_play_with_and_without_mode() {
        for id in [
            "#!::r=live/studio,m=request",
            "#!::r=live/studio",
            "#!::m=request,r=/live/studio",
        ] {
            let r = parse(Some(id)).unwrap();
            assert_eq!(r.action, Action::Play, "{id}");
            assert_eq!(r.name, "studio");
            assert!(r.key.is_none());
        }
        let r = parse(Some("#!::r=live/studio,m=request,s=viewer,u=ann,x=1")).unwrap();
        assert_eq!(r.key.as_ref().map(Secret::expose), Some("viewer"));
        assert_eq!(r.user.as_deref(), Some("ann"));
        assert_eq!(r.query, vec![("x".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn bare_is_play() {
        let r = parse(Some("live/studio")).unwrap();
        assert_eq!(r.action, Action::Play);
        assert_eq!((r.app.as_str(), r.name.as_str()), ("live", "studio"));
        let r = parse(Some("live/studio?key=v")).unwrap();
        assert_eq!(r.key.as_ref().map(Secret::expose), Some("v"));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(None), Err(StreamIdError::Missing));
        assert_eq!(parse(Some("  ")), Err(StreamIdError::Missing));
        assert!(matches!(
            parse(Some("studio")),
            Err(StreamIdError::Resource(_))
        ));
        assert!(matches!(
            parse(Some("live/a/b")),
            Err(StreamIdError::Resource(_))
        ));
        assert!(matches!(
            parse(Some("#!::m=publish,s=k")),
            Err(StreamIdError::Resource(_))
        ));
        assert!(matches!(
            parse(Some("#!::r=live/a,m=bidirectional")),
            Err(StreamIdError::Mode(_))
        ));
        assert!(matches!(
            parse(Some("#!::r=live/a,t=file")),
            Err(StreamIdError::Type(_))
        ));
        assert!(matches!(
            parse(Some("#!::r=live/a,r=live/b")),
            Err(StreamIdError::Malformed(_))
        ));
        assert!(matches!(
            parse(Some("#!::r=live/a,junk")),
            Err(StreamIdError::Malformed(_))
        ));
        let long = format!("live/{}", "a".repeat(MAX_STREAM_ID));
        assert_eq!(parse(Some(&long)), Err(StreamIdError::TooLong));
    }

    #[test]
    fn percent_encoded_access_control_ids_are_decoded() {
        let id = "%23!%3A%3Ar%3Dlive%2Fstudio%2Cm%3Dpublish%2Cs%3Dk-secret-1";
        let r = parse(Some(id)).unwrap();
        assert_eq!(r.action, Action::Publish);
        assert_eq!(r.name, "studio");
        assert_eq!(r.key.as_ref().map(Secret::expose), Some("k-secret-1"));
        assert!(!redact(id).contains("k-secret-1"), "{}", redact(id));
        // Not the encoded prefix: left alone.
        assert_eq!(parse(Some("live/a%2Fb")).unwrap().name, "a%2Fb");
    }

    #[test]
    fn unknown_forms_are_not_shown() {
        assert_eq!(redact("junk-with-key-abc"), "<17 bytes, not shown>");
        assert_eq!(redact("a/b/c?key=x"), "<11 bytes, not shown>");
    }

    #[test]
    fn errors_and_redaction_hide_keys() {
        let e = parse(Some("#!::r=supersecretkey,m=publish")).unwrap_err();
        assert!(!e.to_string().contains("supersecretkey"), "{e}");
        assert_eq!(
            redact("#!::r=live/studio,m=publish,s=sekrit"),
            "#!::r=live/***,m=publish,s=***"
        );
        assert_eq!(
            redact("#!::r=live/studio,m=request,s=v"),
            "#!::r=live/studio,m=request,s=***"
        );
        assert_eq!(redact("live/studio?key=v&x=1"), "live/studio?key=***&x=1");
        let r = parse(Some("#!::r=live/studio,m=publish,s=sekrit")).unwrap();
        assert!(!format!("{r:?}").contains("sekrit"));
        let req = r.access_request("#!::r=live/studio,m=publish,s=sekrit", None);
        assert!(!format!("{:?}", req.stream_id).contains("sekrit"));
    }

    proptest! {
        #[test]
        fn never_panics_and_never_leaks(s in "\\PC{0,600}") {
            let _ = parse(Some(&s));
            let _ = redact(&s);
        }

        #[test]
        fn roundtrip(app in "[a-z]{1,8}", name in "[A-Za-z0-9_-]{1,16}", key in "[A-Za-z0-9]{1,24}") {
            let id = format!("#!::r={app}/{name},m=publish,s={key}");
            let r = parse(Some(&id)).unwrap();
            prop_assert_eq!(r.app, app);
            prop_assert_eq!(r.name, name);
            prop_assert_eq!(r.key.as_ref().map(Secret::expose), Some(key.as_str()));
            let hidden = format!("s={key}");
            prop_assert!(!redact(&id).contains(&hidden));
        }
    }
}
