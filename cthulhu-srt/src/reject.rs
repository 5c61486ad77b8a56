//! SRT rejection reasons (handshake rejection codes).
//!
//! Codes 1000..2000 are libsrt's core reasons (`SRT_REJ_*`), 2000..3000 the
//! server reasons of the SRT access-control spec (`SRT_REJX_*`, modelled on
//! HTTP status codes plus 2000), 3000 and above are application defined.

use std::fmt;

use srt_protocol::packet::{CoreRejectReason, RejectReason};

/// Why a connection was refused, as sent in the SRT handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reject {
    /// 1002 `SRT_REJ_PEER`: the peer refused without a reason.
    Peer,
    /// 1003 `SRT_REJ_RESOURCE`: out of resources.
    Resource,
    /// 1005 `SRT_REJ_BACKLOG`: too many connection requests waiting.
    Backlog,
    /// 1006 `SRT_REJ_IPE`: internal error.
    InternalError,
    /// 1008 `SRT_REJ_VERSION`: unsupported handshake version.
    Version,
    /// 1010 `SRT_REJ_BADSECRET`: wrong passphrase.
    BadSecret,
    /// 1011 `SRT_REJ_UNSECURE`: encryption mismatch (one side has a
    /// passphrase, the other none, or the key lengths differ).
    Unsecure,
    /// 1012 `SRT_REJ_MESSAGEAPI`: stream (non-message) API requested.
    MessageApi,
    /// 1013 `SRT_REJ_CONGESTION`: unsupported congestion control (file mode).
    Congestion,
    /// 1014 `SRT_REJ_FILTER`: unsupported packet filter (FEC).
    Filter,
    /// 1015 `SRT_REJ_GROUP`: socket groups (bonding) are not supported.
    Group,
    /// 1016 `SRT_REJ_TIMEOUT`: the handshake timed out.
    Timeout,
    /// 2400 `SRT_REJX_BAD_REQUEST`: malformed request (e.g. stream id).
    BadRequest,
    /// 2401 `SRT_REJX_UNAUTHORIZED`: credentials missing or wrong.
    Unauthorized,
    /// 2402 `SRT_REJX_OVERLOAD`: server overloaded.
    Overload,
    /// 2403 `SRT_REJX_FORBIDDEN`: access denied.
    Forbidden,
    /// 2404 `SRT_REJX_NOTFOUND`: no such stream.
    NotFound,
    /// 2405 `SRT_REJX_BAD_MODE`: the requested mode (publish/request) is not allowed.
    BadMode,
    /// 2406 `SRT_REJX_UNACCEPTABLE`: the requested parameters cannot be served.
    Unacceptable,
    /// 2409 `SRT_REJX_CONFLICT`: the stream is already in use (e.g. published).
    Conflict,
    /// 2500 `SRT_REJX_ISE`: internal server error.
    InternalServerError,
    /// 2501 `SRT_REJX_UNIMPLEMENTED`: the request is not supported.
    Unimplemented,
    /// Any other code (≥ 1000).
    Code(i32),
}

impl Reject {
    /// The numeric rejection code sent on the wire.
    pub fn code(self) -> i32 {
        match self {
            Reject::Peer => 1002,
            Reject::Resource => 1003,
            Reject::Backlog => 1005,
            Reject::InternalError => 1006,
            Reject::Version => 1008,
            Reject::BadSecret => 1010,
            Reject::Unsecure => 1011,
            Reject::MessageApi => 1012,
            Reject::Congestion => 1013,
            Reject::Filter => 1014,
            Reject::Group => 1015,
            Reject::Timeout => 1016,
            Reject::BadRequest => 2400,
            Reject::Unauthorized => 2401,
            Reject::Overload => 2402,
            Reject::Forbidden => 2403,
            Reject::NotFound => 2404,
            Reject::BadMode => 2405,
            Reject::Unacceptable => 2406,
            Reject::Conflict => 2409,
            Reject::InternalServerError => 2500,
            Reject::Unimplemented => 2501,
            Reject::Code(c) => c,
        }
    }

    /// The reason for a numeric code (named when known).
    pub fn from_code(code: i32) -> Reject {
        const NAMED: [Reject; 22] = [
            Reject::Peer,
            Reject::Resource,
            Reject::Backlog,
            Reject::InternalError,
            Reject::Version,
            Reject::BadSecret,
            Reject::Unsecure,
            Reject::MessageApi,
            Reject::Congestion,
            Reject::Filter,
            Reject::Group,
            Reject::Timeout,
            Reject::BadRequest,
            Reject::Unauthorized,
            Reject::Overload,
            Reject::Forbidden,
            Reject::NotFound,
            Reject::BadMode,
            Reject::Unacceptable,
            Reject::Conflict,
            Reject::InternalServerError,
            Reject::Unimplemented,
        ];
        NAMED
            .into_iter()
            .find(|r| r.code() == code)
            .unwrap_or(Reject::Code(code))
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Peer => "peer",
            Reject::Resource => "resource",
            Reject::Backlog => "backlog",
            Reject::InternalError => "internal error",
            Reject::Version => "version",
            Reject::BadSecret => "bad secret",
            Reject::Unsecure => "unsecure",
            Reject::MessageApi => "message api",
            Reject::Congestion => "congestion",
            Reject::Filter => "filter",
            Reject::Group => "group",
            Reject::Timeout => "timeout",
            Reject::BadRequest => "bad request",
            Reject::Unauthorized => "unauthorized",
            Reject::Overload => "overload",
            Reject::Forbidden => "forbidden",
            Reject::NotFound => "not found",
            Reject::BadMode => "bad mode",
            Reject::Unacceptable => "unacceptable",
            Reject::Conflict => "conflict",
            Reject::InternalServerError => "internal server error",
            Reject::Unimplemented => "unimplemented",
            Reject::Code(_) => "other",
        }
    }

    /// srt-protocol's representation (codes below 1000 become `Peer`).
    pub(crate) fn to_protocol(self) -> RejectReason {
        RejectReason::try_from(self.code()).unwrap_or(RejectReason::Core(CoreRejectReason::Peer))
    }

    /// From srt-protocol's representation.
    pub(crate) fn from_protocol(r: RejectReason) -> Reject {
        Reject::from_code(i32::from(r))
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use srt_protocol::packet::ServerRejectReason;

    #[test]
    fn codes_round_trip() {
        for code in [
            1002, 1010, 1011, 1013, 1014, 2401, 2403, 2404, 2405, 2409, 3001, 1999,
        ] {
            assert_eq!(Reject::from_code(code).code(), code);
        }
        assert_eq!(Reject::from_code(2404), Reject::NotFound);
        assert_eq!(Reject::from_code(3001), Reject::Code(3001));
    }

    #[test]
    fn protocol_round_trip() {
        for r in [
            Reject::BadSecret,
            Reject::NotFound,
            Reject::Unauthorized,
            Reject::Code(3007),
        ] {
            assert_eq!(Reject::from_protocol(r.to_protocol()), r);
        }
        assert_eq!(
            Reject::BadMode.to_protocol(),
            RejectReason::Server(ServerRejectReason::BadMode)
        );
        assert_eq!(
            Reject::Code(5).to_protocol(),
            RejectReason::Core(CoreRejectReason::Peer)
        );
    }
}
