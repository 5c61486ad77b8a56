//! Frames in, init segments and parts out: the sans-IO half of the muxer.
//!
//! One [`Fmp4Muxer`] per init segment: it is created at the first start point (a
//! keyframe of the lead video track, or for audio-only streams any audio frame)
//! and replaced when a track's configuration or codec changes, the track set
//! changes, the publisher leaves or the hub skipped frames. Every replacement is a
//! new init segment, which the window turns into a discontinuity.
//!
//! Decisions are taken at frames of the *lead* track (the first video track, else
//! the first audio track), before the frame is muxed:
//! - a segment ends at a lead keyframe once it covers `segment_target` (audio
//!   only: at the frame that would take it past `segment_target`), or at any lead
//!   frame that would take it past the segment limit (`max_segment`, later the
//!   target duration plus 0.45 s, so that its rounded duration never exceeds it);
//! - a part ends at the first lead frame at or after `part_target` from its start
//!   (less a quarter of a frame interval, for millisecond timestamps), or once it
//!   holds `max_part_bytes`.
//!
//! Each cut is [`Fmp4Muxer::flush_until`] the cutting frame's decode time, so the
//! held-back video sample lasts exactly until the next part; a part is therefore
//! complete, and emitted, as soon as the frame after it arrives. A part is the
//! concatenation of the `moof` + `mdat` fragments written since the previous cut
//! (the muxer also ends a fragment before every keyframe, inside a part).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cthulhu_core::format::fmp4::{Fmp4Config, Fmp4Error, Fmp4Muxer};
use cthulhu_core::{Codec, CodecId, Frame, MediaKind, TrackId, TrackInfo};
use tracing::debug;

/// 90 kHz ticks in a duration (saturating).
pub(crate) fn ticks(d: Duration) -> i64 {
    i64::try_from(d.as_nanos().saturating_mul(90_000) / 1_000_000_000).unwrap_or(i64::MAX)
}

/// The segmenting rules, in 90 kHz ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmenterConfig {
    /// Parts end at the first lead frame at or after this.
    pub(crate) part_target: i64,
    /// Segments end at the first lead keyframe at or after this.
    pub(crate) segment_target: i64,
    /// Segments never get longer than this (cut at a non-keyframe).
    pub(crate) max_segment: i64,
    /// Parts end once they hold this many bytes; larger frames are dropped.
    pub(crate) max_part_bytes: usize,
}

/// What the segmenter produces, in order.
#[derive(Clone, Debug)]
pub(crate) enum SegEvent {
    /// A new init segment: the parts that follow need it. Every init but the
    /// first of a stream follows a discontinuity.
    Init {
        /// `ftyp` + `moov`.
        data: Bytes,
        /// The tracks it describes.
        tracks: Vec<TrackInfo>,
    },
    /// One part of the open segment (the first part opens a segment).
    Part {
        /// `moof` + `mdat` pairs.
        data: Bytes,
        /// Its lead-track duration in ticks.
        duration: i64,
        /// Whether it starts with a keyframe of the lead video track (always for
        /// audio-only streams).
        independent: bool,
        /// Lead video frames in it (0 for audio-only streams).
        video_frames: u32,
    },
    /// The open segment is complete.
    EndSegment,
}

/// The segmenter of one stream.
#[derive(Debug)]
pub(crate) struct Segmenter {
    cfg: SegmenterConfig,
    /// The limit of segments now (`max_segment`, or less once the target duration
    /// is fixed).
    limit: i64,
    /// The latest configuration of every track.
    tracks: BTreeMap<TrackId, TrackInfo>,
    mux: Option<Fmp4Muxer>,
    lead: Option<TrackId>,
    lead_video: bool,
    /// Output of the muxer since the last cut.
    buf: BytesMut,
    seg_start: Option<i64>,
    part_start: i64,
    part_independent: bool,
    part_video_frames: u32,
    last_lead: Option<i64>,
    /// The last lead frame interval.
    interval: i64,
    /// Frames dropped (too large, or while a part is over its byte bound).
    dropped: u64,
}

/// Codecs the fMP4 muxer writes.
fn supported(codec: CodecId) -> bool {
    matches!(
        codec,
        CodecId::H264 | CodecId::H265 | CodecId::Aac | CodecId::Opus
    )
}

impl Segmenter {
    pub(crate) fn new(cfg: SegmenterConfig) -> Self {
        Self {
            cfg,
            limit: cfg.max_segment,
            tracks: BTreeMap::new(),
            mux: None,
            lead: None,
            lead_video: false,
            buf: BytesMut::new(),
            seg_start: None,
            part_start: 0,
            part_independent: false,
            part_video_frames: 0,
            last_lead: None,
            interval: 3000,
            dropped: 0,
        }
    }

    /// Frames dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Caps segments so that their rounded duration stays within `target` whole
    /// seconds (the playlist's fixed target duration).
    pub(crate) fn set_target_duration(&mut self, target_secs: u64) {
        let cap = i64::try_from(target_secs)
            .unwrap_or(i64::MAX / 90_000)
            .saturating_mul(90_000)
            .saturating_add(40_500);
        self.limit = self.cfg.max_segment.min(cap).max(self.cfg.part_target);
    }

    /// A new publish session with these tracks: what was open is finished.
    pub(crate) fn start_session(&mut self, tracks: &[TrackInfo], out: &mut Vec<SegEvent>) {
        self.finish(out);
        self.tracks = tracks.iter().map(|t| (t.id, t.clone())).collect();
    }

    /// Ends the open segment (the publisher left, or a discontinuity follows): the
    /// next media starts a new init segment.
    pub(crate) fn finish(&mut self, out: &mut Vec<SegEvent>) {
        if let Some(mut mux) = self.mux.take() {
            mux.flush(&mut self.buf);
            if let Some(start) = self.seg_start {
                let end = self
                    .last_lead
                    .unwrap_or(start)
                    .saturating_add(self.interval);
                self.emit_part(end, out);
                out.push(SegEvent::EndSegment);
            }
        }
        self.buf.clear();
        self.seg_start = None;
        self.lead = None;
        self.last_lead = None;
    }

    /// Takes one frame (media or configuration).
    pub(crate) fn push(&mut self, frame: &Frame, out: &mut Vec<SegEvent>) {
        if frame.is_config() {
            self.on_config(frame, out);
            return;
        }
        if frame.data.is_empty() {
            return;
        }
        if frame.data.len() > self.cfg.max_part_bytes {
            self.dropped += 1;
            debug!(
                size = frame.data.len(),
                "HLS: frame larger than a part: dropped"
            );
            return;
        }
        if self.mux.is_none() && !self.try_start(frame, out) {
            return;
        }
        let is_lead = Some(frame.track) == self.lead;
        if is_lead {
            if !self.on_lead_frame(frame, out) {
                return;
            }
        } else if self.seg_start.is_none() {
            // nothing before the lead track's first frame
            return;
        } else if self.buf.len() >= self.cfg.max_part_bytes.saturating_mul(2) {
            self.dropped += 1;
            return;
        }
        let Some(mux) = self.mux.as_mut() else {
            return;
        };
        match mux.push_frame(frame, &mut self.buf) {
            Ok(()) => {
                if is_lead && self.lead_video {
                    self.part_video_frames = self.part_video_frames.saturating_add(1);
                }
            }
            Err(Fmp4Error::ConfigChanged(track)) => {
                debug!(?track, "HLS: codec changed: new init segment");
                self.finish(out);
                if self.try_start(frame, out)
                    && self.on_lead_frame(frame, out)
                    && let Some(mux) = self.mux.as_mut()
                    && mux.push_frame(frame, &mut self.buf).is_ok()
                    && self.lead_video
                {
                    self.part_video_frames = self.part_video_frames.saturating_add(1);
                }
            }
            Err(e) => debug!(error = %e, "HLS: frame not muxed"),
        }
    }

    fn on_config(&mut self, frame: &Frame, out: &mut Vec<SegEvent>) {
        if !supported(frame.codec) {
            return;
        }
        let info = TrackInfo::new(
            frame.track,
            Codec::from_config(frame.codec, frame.data.clone()),
        );
        let changed = self.tracks.get(&frame.track) != Some(&info);
        self.tracks.insert(frame.track, info);
        if !changed {
            return;
        }
        let Some(mux) = self.mux.as_mut() else {
            return;
        };
        if let Err(Fmp4Error::ConfigChanged(_) | Fmp4Error::UnknownTrack(_)) =
            mux.push_frame(frame, &mut self.buf)
        {
            debug!(track = ?frame.track, "HLS: tracks changed: new init segment");
            self.finish(out);
        }
    }

    /// Starts a muxer if `frame` is a start point.
    fn try_start(&mut self, frame: &Frame, out: &mut Vec<SegEvent>) -> bool {
        let has_video = self
            .tracks
            .values()
            .any(|t| t.kind() == MediaKind::Video && supported(t.codec.id()));
        let start_point = if has_video {
            frame.kind() == MediaKind::Video && frame.is_keyframe()
        } else {
            frame.kind() == MediaKind::Audio
        };
        if !start_point {
            return false;
        }
        let tracks: Vec<TrackInfo> = self.tracks.values().cloned().collect();
        let config = Fmp4Config {
            max_fragment: Duration::from_secs(2),
            max_video_fragment: Duration::from_secs(10),
            max_fragment_bytes: self.cfg.max_part_bytes,
        };
        let mux = match Fmp4Muxer::new(&tracks, config) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "HLS: no muxable track");
                return false;
            }
        };
        let recorded: Vec<TrackInfo> = mux
            .recorded_tracks()
            .filter_map(|id| self.tracks.get(&id).cloned())
            .collect();
        let lead = recorded
            .iter()
            .find(|t| t.kind() == MediaKind::Video)
            .or(recorded.first());
        let Some(lead) = lead else {
            return false;
        };
        if lead.id != frame.track {
            return false;
        }
        self.lead = Some(lead.id);
        self.lead_video = lead.kind() == MediaKind::Video;
        self.interval = if self.lead_video { 3000 } else { 1920 };
        let mut init = BytesMut::new();
        mux.write_init(&mut init);
        out.push(SegEvent::Init {
            data: init.freeze(),
            tracks: recorded,
        });
        self.mux = Some(mux);
        self.buf.clear();
        self.seg_start = None;
        self.last_lead = None;
        true
    }

    /// Cuts before a lead frame where the rules say so. False: drop the frame.
    fn on_lead_frame(&mut self, frame: &Frame, out: &mut Vec<SegEvent>) -> bool {
        let dts = frame.dts.ticks();
        let keyframe = !self.lead_video || frame.is_keyframe();
        if let Some(last) = self.last_lead {
            let step = dts.saturating_sub(last);
            if step > self.cfg.max_segment || step < -self.cfg.max_segment {
                // a jump in time (a paused publisher, a timestamp reset)
                debug!(step, "HLS: lead track jumped in time: new init segment");
                self.finish(out);
                return self.try_start(frame, out) && self.on_lead_frame(frame, out);
            }
        }
        let Some(seg_start) = self.seg_start else {
            if !keyframe {
                return false;
            }
            self.seg_start = Some(dts);
            self.begin_part(dts, true);
            self.last_lead = Some(dts);
            return true;
        };
        let seg_elapsed = dts.saturating_sub(seg_start);
        let part_elapsed = dts.saturating_sub(self.part_start);
        let interval = self.interval;
        // a quarter frame of slack: millisecond timestamps make 6 frames at 30 fps
        // 199 to 201 ms
        let slack = interval / 4;
        let end_segment = if self.lead_video {
            (frame.is_keyframe() && seg_elapsed.saturating_add(slack) >= self.cfg.segment_target)
                || seg_elapsed.saturating_add(interval) > self.limit
        } else {
            seg_elapsed.saturating_add(interval) > self.cfg.segment_target.min(self.limit)
        };
        let end_part = part_elapsed.saturating_add(slack) >= self.cfg.part_target
            || self.buf.len() >= self.cfg.max_part_bytes;
        if (end_segment || end_part) && part_elapsed > 0 {
            if let Some(mux) = self.mux.as_mut() {
                mux.flush_until(frame.dts, &mut self.buf);
            }
            self.emit_part(dts, out);
            if end_segment {
                out.push(SegEvent::EndSegment);
                self.seg_start = Some(dts);
            }
            self.begin_part(dts, keyframe);
        }
        let step = dts.saturating_sub(self.last_lead.unwrap_or(dts));
        if step > 0 && step <= 90_000 {
            self.interval = step;
        }
        if self.last_lead.is_none_or(|l| dts > l) {
            self.last_lead = Some(dts);
        }
        true
    }

    fn begin_part(&mut self, start: i64, independent: bool) {
        self.part_start = start;
        self.part_independent = independent;
        self.part_video_frames = 0;
    }

    fn emit_part(&mut self, end: i64, out: &mut Vec<SegEvent>) {
        if self.buf.is_empty() {
            return;
        }
        let duration = end.saturating_sub(self.part_start).max(1);
        out.push(SegEvent::Part {
            data: self.buf.split().freeze(),
            duration,
            independent: self.part_independent,
            video_frames: self.part_video_frames,
        });
        self.part_video_frames = 0;
    }
}
