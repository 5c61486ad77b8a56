//! One subscriber's bounded queue and its overflow policy.

use std::collections::VecDeque;

use super::{EndReason, OverflowPolicy, StreamEvent, SubscriberStats};
use crate::model::{Frame, MediaKind};

/// Control events a queue holds before older publish sessions are collapsed.
const MAX_CONTROL_EVENTS: usize = 64;

pub(super) struct SubQueue {
    events: VecDeque<StreamEvent>,
    frames: usize,
    bytes: usize,
    controls: usize,
    max_frames: usize,
    max_bytes: usize,
    policy: OverflowPolicy,
    skipping: bool,
    /// Skipping only to start on a keyframe (a new subscriber or publish session):
    /// frames passed over are not counted as drops.
    starting: bool,
    pending_gap: u64,
    closed: bool,
    dropped: u64,
    overflows: u64,
    delivered: u64,
}

/// Whether a subscriber that skips may resume at this frame.
fn is_resume_point(frame: &Frame, has_video: bool) -> bool {
    if has_video {
        frame.kind() == MediaKind::Video && frame.is_keyframe()
    } else {
        !frame.is_config()
    }
}

impl SubQueue {
    pub(super) fn new(max_frames: usize, max_bytes: usize, policy: OverflowPolicy) -> Self {
        Self {
            events: VecDeque::with_capacity(16),
            frames: 0,
            bytes: 0,
            controls: 0,
            max_frames,
            max_bytes,
            policy,
            skipping: true,
            starting: true,
            pending_gap: 0,
            closed: false,
            dropped: 0,
            overflows: 0,
            delivered: 0,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closes the queue: what is queued is dropped, `Ended(reason)` is the last event.
    pub(super) fn close(&mut self, reason: EndReason) {
        if self.closed {
            return;
        }
        self.dropped += self.frames as u64;
        self.events.clear();
        self.frames = 0;
        self.bytes = 0;
        self.controls = 1;
        self.events.push_back(StreamEvent::Ended(reason));
        self.closed = true;
    }

    /// Queues a control event (never refused for space; bounded by collapsing).
    pub(super) fn push_control(&mut self, ev: StreamEvent) {
        if self.closed {
            return;
        }
        match &ev {
            StreamEvent::Updated(_) => {
                // Only the latest metadata matters.
                let before = self.events.len();
                self.events
                    .retain(|e| !matches!(e, StreamEvent::Updated(_)));
                self.controls -= before - self.events.len();
            }
            StreamEvent::Started(_) => {
                // A new publish session: the subscriber resumes on its first keyframe,
                // which the GOP cache or the publisher provides.
                self.skipping = true;
                self.starting = true;
                self.pending_gap = 0;
            }
            _ => {}
        }
        if self.controls >= MAX_CONTROL_EVENTS {
            self.collapse_sessions();
        }
        self.controls += 1;
        self.events.push_back(ev);
    }

    /// Drops every queued event before the last `Ended`, counting dropped frames.
    fn collapse_sessions(&mut self) {
        let Some(last_end) = self
            .events
            .iter()
            .rposition(|e| matches!(e, StreamEvent::Ended(_)))
        else {
            return;
        };
        for ev in self.events.drain(..last_end) {
            match ev {
                StreamEvent::Frame(f) => {
                    self.frames -= 1;
                    self.bytes -= f.data.len();
                    self.dropped += 1;
                }
                _ => self.controls -= 1,
            }
        }
    }

    /// Offers one frame, applying the bound and the overflow policy.
    pub(super) fn offer(&mut self, frame: &Frame, has_video: bool) {
        if self.closed {
            return;
        }
        if frame.is_config() {
            // Configuration is always kept: it is tiny and a decoder needs it.
            self.push_frame(frame);
            return;
        }
        if self.skipping {
            if !is_resume_point(frame, has_video) {
                if !self.starting {
                    self.dropped += 1;
                    self.pending_gap += 1;
                }
                return;
            }
            self.skipping = false;
            self.starting = false;
            self.push_gap();
        }
        let len = frame.data.len();
        let fits = self.frames == 0
            || (self.frames < self.max_frames && self.bytes + len <= self.max_bytes);
        if fits {
            self.push_frame(frame);
            return;
        }
        self.overflows += 1;
        match self.policy {
            OverflowPolicy::Disconnect => {
                self.dropped += 1;
                self.close(EndReason::Overflow);
            }
            OverflowPolicy::SkipToKeyframe => {
                let removed = self.drop_media();
                self.pending_gap += removed;
                if is_resume_point(frame, has_video) {
                    self.push_gap();
                    self.push_frame(frame);
                } else {
                    self.dropped += 1;
                    self.pending_gap += 1;
                    self.skipping = true;
                    self.starting = false;
                }
            }
        }
    }

    fn push_gap(&mut self) {
        if self.pending_gap > 0 {
            self.controls += 1;
            self.events.push_back(StreamEvent::Gap {
                dropped: self.pending_gap,
            });
            self.pending_gap = 0;
        }
    }

    fn push_frame(&mut self, frame: &Frame) {
        self.frames += 1;
        self.bytes += frame.data.len();
        self.events.push_back(StreamEvent::Frame(frame.clone()));
    }

    /// Drops queued media frames, keeping configuration and control events.
    fn drop_media(&mut self) -> u64 {
        let before = self.frames;
        let mut bytes = self.bytes;
        self.events.retain(|e| match e {
            StreamEvent::Frame(f) if !f.is_config() => {
                bytes -= f.data.len();
                false
            }
            _ => true,
        });
        self.bytes = bytes;
        self.frames = self
            .events
            .iter()
            .filter(|e| matches!(e, StreamEvent::Frame(_)))
            .count();
        let removed = (before - self.frames) as u64;
        self.dropped += removed;
        removed
    }

    pub(super) fn pop(&mut self) -> Option<StreamEvent> {
        let ev = self.events.pop_front()?;
        match &ev {
            StreamEvent::Frame(f) => {
                self.frames -= 1;
                self.bytes -= f.data.len();
                self.delivered += 1;
            }
            _ => self.controls -= 1,
        }
        Some(ev)
    }

    pub(super) fn stats(&self, label: &str) -> SubscriberStats {
        SubscriberStats {
            label: label.to_owned(),
            queued_frames: self.frames,
            queued_bytes: self.bytes,
            dropped_frames: self.dropped,
            overflows: self.overflows,
            delivered_frames: self.delivered,
            members: Vec::new(),
        }
    }
}
