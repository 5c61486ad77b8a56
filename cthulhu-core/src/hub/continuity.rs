//! Riding out short publisher drops for destinations.
//!
//! Platforms end a broadcast when their ingest sees the publisher leave. A push
//! destination therefore keeps its connection open for a grace period after the
//! publisher drops; when a publisher returns within it, the push goes on with the new
//! publish session, its timestamps shifted so that the destination sees one continuous,
//! monotonic timeline that follows the wall clock across the outage.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{EndReason, StreamEvent, Subscriber};
use crate::model::{Frame, StreamInfo, Timestamp};

/// What a destination sees through [`Continuity`].
#[derive(Clone, Debug)]
pub enum ContinuityEvent {
    /// A publish session started (the destination should connect).
    Started(Arc<StreamInfo>),
    /// The publisher came back within the grace period; frames go on on the same timeline
    /// (new codec configuration follows as frames).
    Resumed(Arc<StreamInfo>),
    /// The publisher changed its metadata.
    Updated(Arc<StreamInfo>),
    /// A frame, with timestamps on the destination's continuous timeline.
    Frame(Frame),
    /// Frames were dropped (the subscriber fell behind).
    Gap {
        /// Frames dropped.
        dropped: u64,
    },
    /// The session is over: the publisher stayed away past the grace period, or the
    /// stream ended for another reason. The destination should close cleanly.
    Ended(EndReason),
}

/// Turns a [`Subscriber`]'s events into a continuous session with a grace period.
#[derive(Debug)]
pub struct Continuity {
    grace: Duration,
    in_session: bool,
    /// Ticks added to the current publish session's timestamps.
    offset: i64,
    /// Set when a resumed session's first frame has not been seen yet.
    rebase_from: Option<Instant>,
    last_dts: Option<Timestamp>,
    ended_at: Option<Instant>,
}

impl Continuity {
    /// Creates a continuity tracker with the given grace period (zero: no grace).
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            in_session: false,
            offset: 0,
            rebase_from: None,
            last_dts: None,
            ended_at: None,
        }
    }

    /// Whether a session is in progress (started and not ended).
    pub fn in_session(&self) -> bool {
        self.in_session
    }

    /// Waits for the next event. Returns None when the subscription is closed.
    pub async fn next(&mut self, sub: &mut Subscriber) -> Option<ContinuityEvent> {
        loop {
            let ev = match self.ended_at {
                Some(at) if self.in_session => {
                    let deadline = at + self.grace;
                    match tokio::time::timeout_at(deadline, sub.recv()).await {
                        Ok(ev) => ev?,
                        Err(_) => {
                            self.end();
                            return Some(ContinuityEvent::Ended(EndReason::PublisherGone));
                        }
                    }
                }
                _ => sub.recv().await?,
            };
            if let Some(out) = self.process(ev) {
                return Some(out);
            }
        }
    }

    /// Like [`Self::next`], but first returns `pending` if it holds an event (one taken
    /// by [`Self::try_next`] while batching frames and set aside).
    pub async fn next_or_pending(
        &mut self,
        pending: &mut Option<ContinuityEvent>,
        sub: &mut Subscriber,
    ) -> Option<ContinuityEvent> {
        match pending.take() {
            Some(ev) => Some(ev),
            None => self.next(sub).await,
        }
    }

    /// Waits for a publish session to start, skipping everything else; returns its
    /// info, or None when the subscription is closed. What a destination does between
    /// sessions.
    pub async fn next_session(&mut self, sub: &mut Subscriber) -> Option<Arc<StreamInfo>> {
        loop {
            if let ContinuityEvent::Started(info) = self.next(sub).await? {
                return Some(info);
            }
        }
    }

    /// Takes the next event if one is ready without waiting (for batching writes).
    /// Returns None when nothing is queued or a grace period is running.
    pub fn try_next(&mut self, sub: &mut Subscriber) -> Option<ContinuityEvent> {
        loop {
            if self.ended_at.is_some() {
                return None;
            }
            let ev = sub.try_recv()?;
            if let Some(out) = self.process(ev) {
                return Some(out);
            }
        }
    }

    fn process(&mut self, ev: StreamEvent) -> Option<ContinuityEvent> {
        let live = self.in_session && self.ended_at.is_none();
        match ev {
            StreamEvent::Started(info) => {
                if self.in_session {
                    self.rebase_from = Some(self.ended_at.unwrap_or_else(Instant::now));
                    self.ended_at = None;
                    return Some(ContinuityEvent::Resumed(info));
                }
                self.in_session = true;
                self.offset = 0;
                self.last_dts = None;
                self.rebase_from = None;
                self.ended_at = None;
                Some(ContinuityEvent::Started(info))
            }
            StreamEvent::Updated(info) => live.then_some(ContinuityEvent::Updated(info)),
            StreamEvent::Frame(frame) => live.then(|| ContinuityEvent::Frame(self.rebase(frame))),
            StreamEvent::Gap { dropped } => live.then_some(ContinuityEvent::Gap { dropped }),
            StreamEvent::Ended(reason) => {
                if !self.in_session {
                    return None;
                }
                if matches!(reason, EndReason::PublisherGone | EndReason::Replaced)
                    && !self.grace.is_zero()
                {
                    if self.ended_at.is_none() {
                        self.ended_at = Some(Instant::now());
                    }
                    return None;
                }
                self.end();
                Some(ContinuityEvent::Ended(reason))
            }
        }
    }

    fn end(&mut self) {
        self.in_session = false;
        self.ended_at = None;
        self.rebase_from = None;
    }

    fn rebase(&mut self, mut frame: Frame) -> Frame {
        if let Some(since) = self.rebase_from.take() {
            // Continue the timeline where it stopped, plus the time the publisher was away.
            let away = i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX / 180);
            let resume_at = self
                .last_dts
                .map(|d| d.ticks() + Timestamp::from_millis(away.max(1)).ticks())
                .unwrap_or(0);
            self.offset = resume_at - frame.dts.ticks();
        }
        frame.dts = Timestamp(frame.dts.ticks().saturating_add(self.offset));
        frame.pts = Timestamp(frame.pts.ticks().saturating_add(self.offset));
        if self.last_dts.is_none_or(|d| frame.dts > d) {
            self.last_dts = Some(frame.dts);
        }
        frame
    }
}
