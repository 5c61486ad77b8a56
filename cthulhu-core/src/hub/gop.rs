//! The GOP cache: codec configuration plus the frames since the last video keyframe.

use std::collections::VecDeque;

use std::time::Duration;

use super::GopLength;
use crate::model::{Frame, MediaKind, Timestamp, TrackId};

pub(super) struct GopCache {
    configs: Vec<Frame>,
    frames: VecDeque<Frame>,
    bytes: usize,
    max_bytes: usize,
    /// Whether a video keyframe opened the current cache contents.
    open: bool,
    has_video: bool,
    /// The decode time of the current GOP's keyframe and its video frames so far.
    current: Option<(Timestamp, u32)>,
    /// The last complete GOP.
    last: Option<GopLength>,
}

impl GopCache {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            configs: Vec::new(),
            frames: VecDeque::new(),
            bytes: 0,
            max_bytes,
            open: false,
            has_video: false,
            current: None,
            last: None,
        }
    }

    pub(super) fn clear(&mut self) {
        self.configs.clear();
        self.frames.clear();
        self.bytes = 0;
        self.open = false;
        self.has_video = false;
        self.current = None;
        self.last = None;
    }

    /// The last complete GOP of this publish (None before the second keyframe).
    pub(super) fn last_gop(&self) -> Option<GopLength> {
        self.last
    }

    /// Measures GOPs: called with every video frame that is not configuration.
    fn measure(&mut self, frame: &Frame) {
        if frame.is_keyframe() {
            if let Some((start, frames)) = self.current {
                let ticks = (frame.dts - start).ticks();
                // Timestamps that go backwards (a publisher's restart) measure nothing.
                if ticks > 0 {
                    self.last = Some(GopLength {
                        frames,
                        duration: Duration::from_micros(
                            (ticks as u64).saturating_mul(1_000_000) / Timestamp::HZ as u64,
                        ),
                    });
                }
            }
            self.current = Some((frame.dts, 1));
        } else if let Some((_, frames)) = &mut self.current {
            *frames = frames.saturating_add(1);
        }
    }

    pub(super) fn has_video(&self) -> bool {
        self.has_video
    }

    /// The latest configuration frame of every track.
    pub(super) fn configs(&self) -> impl Iterator<Item = &Frame> {
        self.configs.iter()
    }

    /// Cached frames, starting on a video keyframe (empty when none is cached).
    pub(super) fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.frames.iter()
    }

    fn set_config(&mut self, frame: &Frame) {
        let track: TrackId = frame.track;
        match self.configs.iter_mut().find(|f| f.track == track) {
            Some(slot) => *slot = frame.clone(),
            None => self.configs.push(frame.clone()),
        }
    }

    pub(super) fn push(&mut self, frame: &Frame) {
        if frame.kind() == MediaKind::Video {
            self.has_video = true;
        }
        if frame.is_config() {
            self.set_config(frame);
            return;
        }
        if !self.has_video {
            // Audio-only: every frame is a start point; nothing to cache.
            return;
        }
        if frame.kind() == MediaKind::Video {
            self.measure(frame);
        }
        if frame.kind() == MediaKind::Video && frame.is_keyframe() {
            self.frames.clear();
            self.bytes = 0;
            self.open = true;
        }
        if !self.open {
            return;
        }
        if self.bytes + frame.data.len() > self.max_bytes {
            // Too long a GOP for the cap: give up until the next keyframe.
            self.frames.clear();
            self.bytes = 0;
            self.open = false;
            return;
        }
        self.bytes += frame.data.len();
        self.frames.push_back(frame.clone());
    }
}
