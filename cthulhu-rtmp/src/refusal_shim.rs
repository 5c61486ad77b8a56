//! TEMPORARY stand-in for cthulhu_core::RefusalLog until it lands.
#![allow(dead_code)]
#[derive(Clone, Debug)]
pub(crate) struct RefusalLog(&'static str);
impl RefusalLog {
    pub(crate) fn new(what: &'static str) -> Self {
        Self(what)
    }
    pub(crate) fn refuse(
        &self,
        peer: std::net::IpAddr,
        reason: &'static str,
        detail: std::fmt::Arguments<'_>,
    ) {
        tracing::info!(peer = %peer, reason, "{} refused: {detail}", self.0);
    }
}
