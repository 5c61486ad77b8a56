//! Where segments start and which frames are recorded: pure decisions, no I/O.
//!
//! - A segment starts on a *resume point*: a video keyframe, or for a stream without
//!   video any audio frame. Every segment therefore decodes on its own.
//! - A segment is cut at the first resume point after its duration or size limit is
//!   reached ([`SegmentLimits::due`]).
//! - [`Gate`] keeps memory bounded: while the writer holds more than its budget,
//!   media is dropped, and recording resumes at the next resume point once the
//!   writer has room again. The time left out is reported as one gap.

use std::collections::BTreeMap;
use std::time::Duration;

use cthulhu_core::{Frame, MediaKind, Timestamp, TrackId};

/// Whether a recording may start (or resume) with this frame.
pub(crate) fn is_resume_point(frame: &Frame, has_video: bool) -> bool {
    if frame.is_config() {
        return false;
    }
    if has_video {
        frame.kind() == MediaKind::Video && frame.is_keyframe()
    } else {
        frame.kind() == MediaKind::Audio
    }
}

/// Ticks (90 kHz) to a duration; negative spans count as zero.
pub(crate) fn ticks_to_duration(ticks: i64) -> Duration {
    let ticks = u64::try_from(ticks).unwrap_or(0);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / 90_000).saturating_add(
        // 1e9 / 9e4 is 11111.1..: add the fraction so that 90 000 ticks are one second.
        ticks.saturating_mul(1_000_000_000 % 90_000) / 90_000,
    ))
}

/// The rotation limits of a recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentLimits {
    /// Cut once a segment covers this much media time.
    pub(crate) duration: Option<Duration>,
    /// Cut once a segment holds this many bytes.
    pub(crate) bytes: Option<u64>,
}

impl SegmentLimits {
    /// Whether a segment that covers `elapsed` ticks and holds `bytes` is due for a cut
    /// (at the next resume point).
    pub(crate) fn due(&self, elapsed: i64, bytes: u64) -> bool {
        let by_time = self
            .duration
            .is_some_and(|d| ticks_to_duration(elapsed) >= d);
        let by_size = self.bytes.is_some_and(|b| bytes >= b);
        by_time || by_size
    }
}

/// The media time a segment covers: from its first frame to the end of its last
/// frame (each track's last frame lasting as long as the one before it).
#[derive(Clone, Debug, Default)]
pub(crate) struct Span {
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    last: BTreeMap<TrackId, (Timestamp, i64)>,
}

impl Span {
    /// Counts a written media frame.
    pub(crate) fn add(&mut self, frame: &Frame) {
        if frame.is_config() {
            return;
        }
        let dts = frame.dts;
        if self.start.is_none_or(|s| dts < s) {
            self.start = Some(dts);
        }
        let delta = match self.last.get(&frame.track) {
            Some((prev, prev_delta)) => {
                let d = (dts - *prev).ticks();
                if d > 0 { d } else { *prev_delta }
            }
            None => 0,
        };
        self.last.insert(frame.track, (dts, delta));
        let end = dts + Timestamp(delta);
        if self.end.is_none_or(|e| end > e) {
            self.end = Some(end);
        }
    }

    /// The first frame's decode time.
    #[cfg(test)]
    pub(crate) fn start(&self) -> Option<Timestamp> {
        self.start
    }

    /// Ticks from the first frame to `dts` (0 before any frame).
    pub(crate) fn elapsed_at(&self, dts: Timestamp) -> i64 {
        self.start.map_or(0, |s| (dts - s).ticks())
    }

    /// The covered duration, up to `next_start` when the next segment starts there.
    pub(crate) fn duration(&self, next_start: Option<Timestamp>) -> Duration {
        let (Some(start), Some(end)) = (self.start, next_start.or(self.end)) else {
            return Duration::ZERO;
        };
        ticks_to_duration((end - start).ticks())
    }
}

/// What to do with a media frame ([`Gate::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Record it.
    Write,
    /// Leave it out.
    Drop,
    /// Record it: it ends a gap of this much media time.
    ResumeAfterGap(Duration),
}

/// Drops media while the writer is over its memory budget (or after the hub skipped
/// frames), resuming at a resume point. Configuration frames are not its business:
/// the caller always keeps them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gate {
    /// Set while dropping: the decode time where the gap began.
    gap_from: Option<Timestamp>,
    /// The decode time of the last frame let through.
    last: Option<Timestamp>,
}

impl Gate {
    /// Whether frames are being dropped.
    pub(crate) fn is_dropping(&self) -> bool {
        self.gap_from.is_some()
    }

    /// The hub skipped frames before the next one (the subscriber fell behind): the gap
    /// began after the last frame let through.
    pub(crate) fn skipped_upstream(&mut self) {
        if self.gap_from.is_none() {
            self.gap_from = self.last;
        }
    }

    /// Forgets the stream position (a new publish session starts).
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Decides about one media frame. `over_budget`: the writer holds more bytes than
    /// allowed.
    pub(crate) fn admit(&mut self, frame: &Frame, has_video: bool, over_budget: bool) -> Admit {
        if let Some(from) = self.gap_from {
            if over_budget || !is_resume_point(frame, has_video) {
                return Admit::Drop;
            }
            self.gap_from = None;
            self.last = Some(frame.dts);
            return Admit::ResumeAfterGap(ticks_to_duration((frame.dts - from).ticks()));
        }
        if over_budget {
            self.gap_from = Some(frame.dts);
            return Admit::Drop;
        }
        if self.last.is_none_or(|l| frame.dts > l) {
            self.last = Some(frame.dts);
        }
        Admit::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cthulhu_core::{CodecId, FrameFlags};
    use proptest::prelude::*;

    fn video(ms: i64, key: bool) -> Frame {
        Frame {
            track: TrackId::VIDEO,
            codec: CodecId::H264,
            pts: Timestamp::from_millis(ms),
            dts: Timestamp::from_millis(ms),
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            },
            data: Bytes::from_static(&[0; 100]),
        }
    }

    fn audio(ms: i64) -> Frame {
        Frame {
            track: TrackId::AUDIO,
            codec: CodecId::Aac,
            pts: Timestamp::from_millis(ms),
            dts: Timestamp::from_millis(ms),
            flags: FrameFlags::NONE,
            data: Bytes::from_static(&[0; 10]),
        }
    }

    #[test]
    fn ticks_convert_exactly() {
        assert_eq!(ticks_to_duration(90_000), Duration::from_secs(1));
        assert_eq!(ticks_to_duration(90), Duration::from_millis(1));
        assert_eq!(ticks_to_duration(1), Duration::from_nanos(11_111));
        assert_eq!(ticks_to_duration(-5), Duration::ZERO);
        assert_eq!(ticks_to_duration(90_000 * 7200), Duration::from_secs(7200));
    }

    #[test]
    fn resume_points() {
        assert!(is_resume_point(&video(0, true), true));
        assert!(!is_resume_point(&video(0, false), true));
        assert!(!is_resume_point(&audio(0), true));
        assert!(is_resume_point(&audio(0), false));
        let mut config = video(0, true);
        config.flags = FrameFlags::CONFIG;
        assert!(!is_resume_point(&config, true));
    }

    #[test]
    fn limits() {
        let l = SegmentLimits {
            duration: Some(Duration::from_secs(2)),
            bytes: None,
        };
        assert!(!l.due(179_999, u64::MAX));
        assert!(l.due(180_000, 0));
        let l = SegmentLimits {
            duration: None,
            bytes: Some(1000),
        };
        assert!(!l.due(i64::MAX, 999));
        assert!(l.due(0, 1000));
        assert!(!SegmentLimits::default().due(i64::MAX, u64::MAX));
    }

    #[test]
    fn span_counts_the_last_frame() {
        let mut s = Span::default();
        for ms in [0, 40, 80] {
            s.add(&video(ms, ms == 0));
        }
        s.add(&audio(10));
        s.add(&audio(31));
        assert_eq!(s.start(), Some(Timestamp(0)));
        assert_eq!(s.duration(None), Duration::from_millis(120));
        assert_eq!(
            s.duration(Some(Timestamp::from_millis(200))),
            Duration::from_millis(200)
        );
        assert_eq!(Span::default().duration(None), Duration::ZERO);
    }

    #[test]
    fn gate_drops_to_the_next_keyframe_and_reports_the_gap() {
        let mut g = Gate::default();
        assert_eq!(g.admit(&video(0, true), true, false), Admit::Write);
        assert_eq!(g.admit(&video(40, false), true, false), Admit::Write);
        // over budget: drop, even once the budget is back, until a keyframe
        assert_eq!(g.admit(&video(80, false), true, true), Admit::Drop);
        assert_eq!(g.admit(&audio(90), true, false), Admit::Drop);
        assert_eq!(g.admit(&video(120, false), true, false), Admit::Drop);
        assert_eq!(g.admit(&video(160, true), true, true), Admit::Drop);
        assert_eq!(
            g.admit(&video(200, true), true, false),
            Admit::ResumeAfterGap(Duration::from_millis(120))
        );
        assert_eq!(g.admit(&audio(210), true, false), Admit::Write);
    }

    #[test]
    fn gate_reports_upstream_skips_from_the_last_frame() {
        let mut g = Gate::default();
        g.skipped_upstream(); // nothing recorded yet: no gap to report
        assert_eq!(g.admit(&video(0, true), true, false), Admit::Write);
        assert_eq!(g.admit(&video(40, false), true, false), Admit::Write);
        g.skipped_upstream();
        assert!(g.is_dropping());
        assert_eq!(
            g.admit(&video(1040, true), true, false),
            Admit::ResumeAfterGap(Duration::from_millis(1000))
        );
        // audio-only: any audio frame resumes
        let mut g = Gate::default();
        assert_eq!(g.admit(&audio(0), false, true), Admit::Drop);
        assert_eq!(
            g.admit(&audio(21), false, false),
            Admit::ResumeAfterGap(Duration::from_millis(21))
        );
    }

    /// One frame of a generated stream: video at 25 fps with a keyframe every `gop`
    /// frames, audio in between, random byte sizes.
    fn stream(gop: usize, frames: usize, sizes: &[usize]) -> Vec<Frame> {
        let mut out = Vec::new();
        for i in 0..frames {
            let ms = i as i64 * 40;
            let mut v = video(ms, i % gop == 0);
            v.data = Bytes::from(vec![0; sizes[i % sizes.len()]]);
            out.push(v);
            out.push(audio(ms + 20));
        }
        out
    }

    proptest! {
        /// Cutting a stream with the limits gives segments that each start on a
        /// keyframe, reach the limit (all but the last), and overshoot the duration by
        /// less than one GOP.
        #[test]
        fn segments_start_on_keyframes_and_respect_limits(
            gop in 1usize..60,
            frames in 1usize..600,
            secs in 1u64..10,
            bytes in proptest::option::of(1000u64..50_000),
            sizes in proptest::collection::vec(1usize..3000, 1..20),
        ) {
            let limits = SegmentLimits { duration: Some(Duration::from_secs(secs)), bytes };
            let mut segments: Vec<(Span, u64, Vec<Frame>)> = Vec::new();
            let mut open = false;
            for f in stream(gop, frames, &sizes) {
                let resume = is_resume_point(&f, true);
                if !open {
                    if !resume { continue; }
                    segments.push((Span::default(), 0, Vec::new()));
                    open = true;
                } else if resume {
                    let (span, size, _) = segments.last().unwrap();
                    if limits.due(span.elapsed_at(f.dts), *size) {
                        segments.push((Span::default(), 0, Vec::new()));
                    }
                }
                let (span, size, list) = segments.last_mut().unwrap();
                span.add(&f);
                *size += f.data.len() as u64;
                list.push(f);
            }
            let gop_ms = gop as i64 * 40;
            let count = segments.len();
            for (i, (span, size, list)) in segments.iter().enumerate() {
                prop_assert!(list[0].is_keyframe(), "segment {} starts on a non-keyframe", i);
                if i + 1 < count {
                    let next = segments[i + 1].2[0].dts;
                    let elapsed = span.elapsed_at(next);
                    // cut only when due ...
                    let last_video = list.iter().rev().find(|f| f.kind() == MediaKind::Video).unwrap();
                    let size_before_next = *size;
                    prop_assert!(limits.due(elapsed, size_before_next));
                    // ... and at the first keyframe where it was: no keyframe inside
                    // the segment was due yet
                    for (k, f) in list.iter().enumerate().skip(1) {
                        if f.is_keyframe() {
                            let before: u64 = list[..k].iter().map(|f| f.data.len() as u64).sum();
                            prop_assert!(!limits.due(span.elapsed_at(f.dts), before));
                        }
                    }
                    if bytes.is_none() {
                        prop_assert!(elapsed < (secs as i64 * 1000 + gop_ms) * 90);
                    }
                    prop_assert!(last_video.dts < next);
                }
            }
        }
    }
}
