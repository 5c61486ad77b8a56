//! The component seams: sources publish into the hub, sinks consume a subscription.

use async_trait::async_trait;

use crate::hub::{Hub, Subscriber};

/// A boxed error from a component, with a message safe to log (no secrets).
pub type ComponentError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Something that publishes into the hub: an RTMP publisher, an SRT caller, a file playout.
#[async_trait]
pub trait Source: Send {
    /// A short description for logs.
    fn describe(&self) -> String;

    /// Publishes until the source ends.
    async fn run(self: Box<Self>, hub: Hub) -> Result<(), ComponentError>;
}

/// Something that consumes one subscription until it ends: a push, a player, a recorder.
#[async_trait]
pub trait Sink: Send {
    /// A short description for logs (never containing a key).
    fn describe(&self) -> String;

    /// Consumes the subscription until the sink or the stream ends.
    async fn run(self: Box<Self>, subscriber: Subscriber) -> Result<(), ComponentError>;
}
