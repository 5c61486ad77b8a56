//! The GOP cache: codec configuration plus the frames since the last video keyframe.

use std::collections::VecDeque;

use crate::model::{Frame, MediaKind, TrackId};

pub(super) struct GopCache {
    configs: Vec<Frame>,
    frames: VecDeque<Frame>,
    bytes: usize,
    max_bytes: usize,
    /// Whether a video keyframe opened the current cache contents.
    open: bool,
    has_video: bool,
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
        }
    }

    pub(super) fn clear(&mut self) {
        self.configs.clear();
        self.frames.clear();
        self.bytes = 0;
        self.open = false;
        self.has_video = false;
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
