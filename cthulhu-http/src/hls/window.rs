//! The in-memory sliding window of one stream: init segments, complete segments
//! and the parts of the open one, as shared [`Bytes`].
//!
//! Memory: a part is stored once. When its segment completes, the parts are
//! joined into the segment's one buffer (a copy per segment, not per viewer) and
//! every part becomes a slice of it, so a segment and its parts share their bytes.
//! Serving is a clone of `Bytes` (a reference count). The window is bounded by
//! segment count (`segments_kept` listed plus [`EXTRA_RETAINED`] still
//! downloadable) and by bytes (`max_bytes`, dropping the oldest segments first).
//!
//! Numbering: media sequence numbers grow by one per segment from 0; part indices
//! start at 0 in each segment; every init segment but the first opens a new
//! discontinuity (sequence numbers per segment, like the playlist's
//! `EXT-X-DISCONTINUITY-SEQUENCE`).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use cthulhu_core::TrackInfo;

use super::segmenter::SegEvent;

/// Segments kept downloadable after they left the playlist: a client that loaded
/// the playlist just before may still ask for them (RFC 8216bis 6.2.2: a segment
/// stays available for its duration plus the playlist's after it appeared).
pub(crate) const EXTRA_RETAINED: usize = 2;

/// Parts are listed for the segments that end within this many target durations
/// of the end of the playlist (RFC 8216bis 6.2.2).
pub(crate) const PART_LIST_TARGETS: i64 = 3;

/// One part.
#[derive(Clone, Debug)]
pub(crate) struct PartEntry {
    pub(crate) data: Bytes,
    /// Ticks.
    pub(crate) duration: i64,
    pub(crate) independent: bool,
}

/// One segment, complete or open.
#[derive(Clone, Debug)]
pub(crate) struct SegmentEntry {
    pub(crate) msn: u64,
    /// Its discontinuity sequence number.
    pub(crate) dsn: u64,
    /// The init segment it needs.
    pub(crate) init: u64,
    /// An `EXT-X-DISCONTINUITY` precedes it.
    pub(crate) discontinuity: bool,
    pub(crate) parts: Vec<PartEntry>,
    /// Ticks: the sum of its parts.
    pub(crate) duration: i64,
    /// The whole segment (empty while open).
    pub(crate) data: Bytes,
    /// Lead video frames in it.
    pub(crate) video_frames: u32,
}

impl SegmentEntry {
    fn bytes(&self) -> usize {
        if self.data.is_empty() {
            self.parts.iter().map(|p| p.data.len()).sum()
        } else {
            self.data.len()
        }
    }
}

/// One init segment.
#[derive(Clone, Debug)]
pub(crate) struct InitEntry {
    pub(crate) id: u64,
    pub(crate) data: Bytes,
    pub(crate) tracks: Vec<TrackInfo>,
}

/// What a lookup finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// There it is.
    Found(Bytes),
    /// Not yet, but soon (the open segment, a hinted part): worth waiting for.
    Pending,
    /// Not here and not coming.
    Gone,
}

/// Whether a blocking playlist reload can be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reload {
    /// Now.
    Ready,
    /// Not yet.
    Wait,
    /// Too far in the future (RFC 8216bis 6.2.5.2: 400 at once).
    TooFar,
}

/// Window settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowConfig {
    /// Complete segments listed.
    pub(crate) segments_kept: usize,
    /// The byte bound.
    pub(crate) max_bytes: usize,
    /// The configured part target, ticks.
    pub(crate) part_target: i64,
    /// The longest segment, ticks (caps the target duration).
    pub(crate) max_segment: i64,
    /// The expected segment duration (from the publisher's GOP), ticks, if known.
    pub(crate) expected_segment: i64,
}

/// The window of one stream.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) cfg: WindowConfig,
    pub(crate) inits: VecDeque<InitEntry>,
    next_init: u64,
    pub(crate) current_init: Option<u64>,
    /// Complete segments, oldest first.
    pub(crate) segments: VecDeque<SegmentEntry>,
    /// The segment being written.
    pub(crate) open: Option<SegmentEntry>,
    /// The msn of the open segment, or of the next one.
    pub(crate) next_msn: u64,
    next_dsn: u64,
    pending_discontinuity: bool,
    /// Fixed at the first complete segment (it must not change).
    pub(crate) target_duration: Option<u64>,
    /// The advertised part target, ticks, fixed with the target duration.
    pub(crate) part_target: Option<i64>,
    /// The playlist has ended (`EXT-X-ENDLIST`).
    pub(crate) ended: bool,
    /// A publisher is live: the preload hint is offered.
    pub(crate) live: bool,
    bytes: usize,
    /// Grows with every change.
    pub(crate) version: u64,
}

/// Whole seconds, rounded to the nearest.
pub(crate) fn round_secs(ticks: i64) -> u64 {
    u64::try_from(ticks.saturating_add(45_000) / 90_000).unwrap_or(0)
}

impl Window {
    pub(crate) fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            inits: VecDeque::new(),
            next_init: 0,
            current_init: None,
            segments: VecDeque::new(),
            open: None,
            next_msn: 0,
            next_dsn: 0,
            pending_discontinuity: false,
            target_duration: None,
            part_target: None,
            ended: false,
            live: true,
            bytes: 0,
            version: 0,
        }
    }

    /// A new init segment came and no segment uses it yet.
    pub(crate) fn pending_discontinuity(&self) -> bool {
        self.pending_discontinuity
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies what the segmenter produced.
    pub(crate) fn apply(&mut self, ev: SegEvent) {
        if self.ended {
            return;
        }
        self.version = self.version.wrapping_add(1);
        match ev {
            SegEvent::Init { data, tracks } => {
                if self.open.is_some() {
                    self.seal();
                }
                let id = self.next_init;
                self.next_init += 1;
                if !self.segments.is_empty() || self.current_init.is_some() {
                    self.pending_discontinuity = true;
                }
                // an init that never got a segment is replaced
                if let Some(cur) = self.current_init
                    && !self.segments.iter().any(|s| s.init == cur)
                {
                    self.drop_init(cur);
                    self.pending_discontinuity = !self.segments.is_empty();
                }
                self.bytes += data.len();
                self.inits.push_back(InitEntry { id, data, tracks });
                self.current_init = Some(id);
            }
            SegEvent::Part {
                data,
                duration,
                independent,
                video_frames,
            } => {
                let Some(init) = self.current_init else {
                    return;
                };
                let open = self.open.get_or_insert_with(|| {
                    let discontinuity = std::mem::take(&mut self.pending_discontinuity);
                    if discontinuity {
                        self.next_dsn += 1;
                    }
                    SegmentEntry {
                        msn: self.next_msn,
                        dsn: self.next_dsn,
                        init,
                        discontinuity,
                        parts: Vec::new(),
                        duration: 0,
                        data: Bytes::new(),
                        video_frames: 0,
                    }
                });
                self.bytes += data.len();
                open.duration = open.duration.saturating_add(duration);
                open.video_frames = open.video_frames.saturating_add(video_frames);
                open.parts.push(PartEntry {
                    data,
                    duration,
                    independent,
                });
                self.evict();
            }
            SegEvent::EndSegment => self.seal(),
        }
    }

    /// The publisher left (`live` false) or came back.
    pub(crate) fn set_live(&mut self, live: bool) {
        if self.live != live {
            self.live = live;
            self.version = self.version.wrapping_add(1);
        }
    }

    /// The playlist ends: `EXT-X-ENDLIST`, nothing more is added.
    pub(crate) fn end(&mut self) {
        if self.open.is_some() {
            self.seal();
        }
        self.ended = true;
        self.live = false;
        self.version = self.version.wrapping_add(1);
    }

    fn seal(&mut self) {
        let Some(mut seg) = self.open.take() else {
            return;
        };
        let total: usize = seg.parts.iter().map(|p| p.data.len()).sum();
        let mut joined = BytesMut::with_capacity(total);
        for p in &seg.parts {
            joined.extend_from_slice(&p.data);
        }
        let joined = joined.freeze();
        let mut at = 0;
        for p in &mut seg.parts {
            let len = p.data.len();
            p.data = joined.slice(at..at + len);
            at += len;
        }
        seg.data = joined;
        self.next_msn = seg.msn + 1;
        if self.target_duration.is_none() {
            self.fix_targets(&seg);
        }
        self.segments.push_back(seg);
        self.evict();
    }

    /// The target duration and part target, from the first complete segment.
    fn fix_targets(&mut self, first: &SegmentEntry) {
        let longest = first.duration.max(self.cfg.expected_segment);
        let cap = round_secs(self.cfg.max_segment).max(1);
        self.target_duration = Some(round_secs(longest).clamp(1, cap));
        let longest_part = first.parts.iter().map(|p| p.duration).max().unwrap_or(0);
        // whole milliseconds, rounded up
        let longest_part = longest_part.saturating_add(89) / 90 * 90;
        let base = self.cfg.part_target;
        self.part_target = Some(longest_part.clamp(base, base + base / 2));
    }

    fn evict(&mut self) {
        let retained = self.cfg.segments_kept + EXTRA_RETAINED;
        while self.segments.len() > retained
            || (self.bytes > self.cfg.max_bytes && !self.segments.is_empty())
        {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(seg.bytes());
            let init = seg.init;
            let used = self.segments.iter().any(|s| s.init == init)
                || self.open.as_ref().is_some_and(|s| s.init == init)
                || self.current_init == Some(init);
            if !used {
                self.drop_init(init);
            }
        }
    }

    fn drop_init(&mut self, id: u64) {
        if let Some(i) = self.inits.iter().position(|e| e.id == id)
            && let Some(e) = self.inits.remove(i)
        {
            self.bytes = self.bytes.saturating_sub(e.data.len());
        }
    }

    /// The complete segments the playlist lists (the newest `segments_kept`).
    pub(crate) fn listed(&self) -> impl Iterator<Item = &SegmentEntry> {
        let skip = self.segments.len().saturating_sub(self.cfg.segments_kept);
        self.segments.iter().skip(skip)
    }

    /// The msn and part count of the segment being written (or the next one).
    pub(crate) fn current(&self) -> (u64, usize) {
        match &self.open {
            Some(o) => (o.msn, o.parts.len()),
            None => (self.next_msn, 0),
        }
    }

    /// The Advance Part Limit (RFC 8216bis 6.2.5.2): 3 / PART-TARGET below 1 s,
    /// else 3.
    pub(crate) fn advance_part_limit(&self) -> u64 {
        let pt = self.part_target.unwrap_or(self.cfg.part_target).max(1);
        if pt < 90_000 {
            u64::try_from(3 * 90_000 / pt).unwrap_or(3).max(3)
        } else {
            3
        }
    }

    /// Whether a playlist request with `_HLS_msn=msn` (and `_HLS_part=part`) can be
    /// answered now.
    pub(crate) fn reload(&self, msn: u64, part: Option<u64>) -> Reload {
        if self.ended {
            return Reload::Ready;
        }
        let last_complete = self.segments.back().map(|s| s.msn);
        let horizon = match last_complete {
            Some(last) => last.saturating_add(2),
            None => self.next_msn.saturating_add(1),
        };
        if msn > horizon {
            return Reload::TooFar;
        }
        if self.target_duration.is_none() {
            return Reload::Wait;
        }
        let Some(mut part) = part else {
            return if last_complete.is_some_and(|l| l >= msn) {
                Reload::Ready
            } else {
                Reload::Wait
            };
        };
        let mut msn = msn;
        // a part index past a complete segment's last is part 0 of the next one
        while let Some(seg) = self.segment(msn) {
            if u64::try_from(seg.parts.len()).unwrap_or(u64::MAX) > part {
                return Reload::Ready;
            }
            msn += 1;
            part = 0;
        }
        if self.segments.front().is_some_and(|s| msn < s.msn) {
            return Reload::Ready;
        }
        let (cur, have) = self.current();
        let have = u64::try_from(have).unwrap_or(u64::MAX);
        if msn < cur || (msn == cur && part < have) {
            return Reload::Ready;
        }
        if msn == cur && part > have.saturating_add(self.advance_part_limit()) {
            return Reload::TooFar;
        }
        Reload::Wait
    }

    /// A complete segment.
    fn segment(&self, msn: u64) -> Option<&SegmentEntry> {
        let first = self.segments.front()?.msn;
        let i = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(i)
    }

    /// The init segment `id`.
    pub(crate) fn init(&self, id: u64) -> Lookup {
        match self.inits.iter().find(|e| e.id == id) {
            Some(e) => Lookup::Found(e.data.clone()),
            None => Lookup::Gone,
        }
    }

    /// The complete segment `msn`; pending while it is being written.
    pub(crate) fn segment_data(&self, msn: u64) -> Lookup {
        if let Some(seg) = self.segment(msn) {
            return Lookup::Found(seg.data.clone());
        }
        if !self.ended && msn == self.current().0 {
            return Lookup::Pending;
        }
        Lookup::Gone
    }

    /// Part `index` of segment `msn`; pending for the next parts (a preload hint
    /// names the next one).
    pub(crate) fn part(&self, msn: u64, index: u64) -> Lookup {
        let at = usize::try_from(index).unwrap_or(usize::MAX);
        if let Some(seg) = self.segment(msn) {
            return match seg.parts.get(at) {
                Some(p) => Lookup::Found(p.data.clone()),
                None => Lookup::Gone,
            };
        }
        let (cur, _) = self.current();
        if let Some(open) = &self.open
            && open.msn == msn
            && let Some(p) = open.parts.get(at)
        {
            return Lookup::Found(p.data.clone());
        }
        if self.ended {
            return Lookup::Gone;
        }
        let have = u64::try_from(self.current().1).unwrap_or(u64::MAX);
        let limit = self.advance_part_limit();
        let near = (msn == cur && index <= have.saturating_add(limit))
            || (msn == cur.saturating_add(1) && index <= limit);
        if near { Lookup::Pending } else { Lookup::Gone }
    }
}
