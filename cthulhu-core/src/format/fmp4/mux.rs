//! The muxer: core frames in, an init segment and `moof` + `mdat` fragments out.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::init::{FLAGS_NON_SYNC, FLAGS_SYNC, TrackSetup, init_segment};
use super::{Fmp4Config, Fmp4Error, SkipReason, SkippedTrack};
use crate::codec::{nal_units, opus};
use crate::model::{CodecId, Frame, Timestamp, TrackId, TrackInfo};

/// The largest frame; larger ones are refused. With 4-byte NAL unit lengths a sample
/// is at most twice that. A fragment is written as soon as its samples reach
/// [`MAX_FRAGMENT_BYTES`], one sample at a time, so it holds less than 1.5 GiB:
/// sample sizes and data offsets (32-bit in `trun`) always fit.
const MAX_SAMPLE_SIZE: usize = 256 << 20;
/// The most bytes of samples in one fragment ([`Fmp4Config::max_fragment_bytes`] is
/// capped to this).
const MAX_FRAGMENT_BYTES: usize = 1 << 30;
/// The most samples (of all tracks) in one fragment.
const MAX_FRAGMENT_SAMPLES: usize = 1 << 16;

/// Counters of a muxer's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fmp4Stats {
    /// Fragments (`moof` + `mdat` pairs) written.
    pub fragments: u64,
    /// Samples written.
    pub samples: u64,
    /// Bytes of fragments written (the init segment not included).
    pub fragment_bytes: u64,
    /// Video frames dropped because their track had no keyframe yet.
    pub dropped_before_keyframe: u64,
}

/// A sans-IO fragmented MP4 muxer for recordings.
///
/// Call order: [`new`](Self::new), [`write_init`](Self::write_init) once at the
/// start of the output, then [`push_frame`](Self::push_frame) for every frame, and
/// [`flush`](Self::flush) (or [`flush_until`](Self::flush_until)) at the end. Each
/// call appends whole boxes to the caller's buffer, which the caller writes out in
/// order; the module documentation describes the layout, when fragments end and
/// why a file cut anywhere still plays.
///
/// One muxer writes one recording (one file or object): to cut a recording into
/// segments, flush this muxer and start a new one, whose time 0 is its first frame.
///
/// ```no_run
/// use bytes::BytesMut;
/// use cthulhu_core::format::fmp4::{Fmp4Config, Fmp4Error, Fmp4Muxer};
/// use cthulhu_core::{Frame, Timestamp, TrackInfo};
///
/// /// Writes `out` to the current file or upload part.
/// fn write(out: &mut BytesMut) {
///     out.clear();
/// }
///
/// fn record(tracks: &[TrackInfo], frames: &[Frame]) -> Result<(), Fmp4Error> {
///     let segment = Timestamp::from_millis(60_000);
///     let mut mux = Fmp4Muxer::new(tracks, Fmp4Config::default())?;
///     let mut out = BytesMut::new();
///     mux.write_init(&mut out);
///     let mut segment_start = None;
///     for frame in frames {
///         let started = *segment_start.get_or_insert(frame.dts);
///         if frame.is_keyframe() && frame.dts - started >= segment {
///             // a new segment starts with this keyframe
///             mux.flush_until(frame.dts, &mut out);
///             write(&mut out);
///             // ... close this file, open the next ...
///             mux = Fmp4Muxer::new(tracks, Fmp4Config::default())?;
///             mux.write_init(&mut out);
///             segment_start = Some(frame.dts);
///         }
///         match mux.push_frame(frame, &mut out) {
///             // new codec parameters: flush, and start again with new tracks
///             Err(Fmp4Error::ConfigChanged(_)) => break,
///             Err(e) => eprintln!("frame not recorded: {e}"),
///             Ok(()) => {}
///         }
///         write(&mut out);
///     }
///     mux.flush(&mut out);
///     write(&mut out);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Fmp4Muxer {
    config: Fmp4Config,
    tracks: Vec<Track>,
    skipped: Vec<SkippedTrack>,
    /// The configuration each skipped track came with, by index in `skipped`.
    skipped_configs: Vec<Bytes>,
    /// The index of the lead track in `tracks`.
    lead: usize,
    init: Bytes,
    /// The first decode time of the recording, in 90 kHz ticks: time 0.
    origin: Option<i64>,
    /// The next `mfhd` sequence number.
    sequence: u32,
    stats: Fmp4Stats,
}

#[derive(Debug)]
struct Sample {
    data: Bytes,
    /// Decode time in the track's timescale.
    decode: u64,
    duration: u32,
    /// Composition time offset (pts - dts) in the track's timescale.
    cto: i32,
    sync: bool,
}

#[derive(Debug)]
struct Track {
    id: TrackId,
    codec: CodecId,
    /// The configuration record the init segment was built from.
    config: Bytes,
    setup: TrackSetup,
    /// [`Fmp4Config::max_fragment`] (or `max_video_fragment` in recordings with
    /// video) in the timescale.
    max_fragment: u64,
    /// Samples with a duration, for the next fragment.
    pending: Vec<Sample>,
    pending_bytes: usize,
    pending_duration: u64,
    /// The last sample, waiting for the next one to give it a duration.
    held: Option<Sample>,
    /// The decode time after the last written sample: later samples start no
    /// earlier.
    next_decode: u64,
    /// The last sample duration that was neither 0 nor a gap of more than 10 s.
    last_duration: Option<u32>,
    keyframe_seen: bool,
}

impl Track {
    /// A non-negative time in 90 kHz ticks, in the track's timescale (rounded).
    fn to_timescale(&self, ticks: i64) -> u64 {
        let v = (i128::from(ticks.max(0)) * i128::from(self.setup.timescale) + 45_000) / 90_000;
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// A signed offset in 90 kHz ticks, in the track's timescale, clamped to 32 bits.
    fn offset_to_timescale(&self, ticks: i64) -> i32 {
        let v = i128::from(ticks) * i128::from(self.setup.timescale) / 90_000;
        i32::try_from(v.clamp(i128::from(i32::MIN), i128::from(i32::MAX))).unwrap_or(0)
    }

    fn to_duration(&self, units: u64) -> Duration {
        let nanos = u128::from(units) * 1_000_000_000 / u128::from(self.setup.timescale.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The frame payload as a sample: NAL units are checked and get 4-byte lengths.
    fn sample_data(&self, frame: &Frame) -> Result<Bytes, Fmp4Error> {
        if !self.setup.video {
            return Ok(frame.data.clone());
        }
        let invalid = |_| Fmp4Error::InvalidFrame {
            track: self.id,
            reason: "NAL unit length past the end",
        };
        let len = self.setup.nalu_len;
        if len == 4 {
            for nal in nal_units(&frame.data, len) {
                nal.map_err(invalid)?;
            }
            return Ok(frame.data.clone());
        }
        let mut out = BytesMut::with_capacity(frame.data.len().saturating_add(64));
        for nal in nal_units(&frame.data, len) {
            let nal = nal.map_err(invalid)?;
            out.put_u32(u32::try_from(nal.len()).unwrap_or(u32::MAX));
            out.put_slice(nal);
        }
        Ok(out.freeze())
    }

    /// Gives the held sample the duration up to `target` (never negative, at most
    /// 32 bits) and queues it; returns where the next sample starts.
    fn close_held(&mut self, target: u64) -> u64 {
        let Some(held) = self.held.take() else {
            return target.max(self.next_decode);
        };
        let duration = u32::try_from(target.saturating_sub(held.decode)).unwrap_or(u32::MAX);
        self.queue(held, duration)
    }

    /// Queues the held sample with the best guess of its duration: the one before
    /// it, else what the codec says.
    fn close_held_guessing(&mut self) {
        if let Some(held) = self.held.take() {
            let duration = self.guess_duration(&held);
            self.queue(held, duration);
        }
    }

    fn guess_duration(&self, sample: &Sample) -> u32 {
        if self.codec == CodecId::Opus
            && let Ok(samples) = opus::packet_samples(&sample.data)
        {
            return samples;
        }
        self.last_duration.unwrap_or(self.setup.frame_duration)
    }

    fn queue(&mut self, mut sample: Sample, duration: u32) -> u64 {
        sample.duration = duration;
        // a gap (a paused publisher) is no guess for the next duration
        if duration > 0 && u64::from(duration) <= u64::from(self.setup.timescale) * 10 {
            self.last_duration = Some(duration);
        }
        let end = sample.decode.saturating_add(u64::from(duration));
        self.pending_duration = self.pending_duration.saturating_add(u64::from(duration));
        self.pending_bytes = self.pending_bytes.saturating_add(sample.data.len());
        self.pending.push(sample);
        end
    }

    /// The bytes of this track's `traf`.
    fn traf_size(&self) -> u64 {
        let tfhd = if self.setup.video { 16 } else { 20 };
        let per_sample = if self.setup.video { 16 } else { 8 };
        let trun = 20 + per_sample * self.pending.len() as u64;
        8 + tfhd + 20 + trun
    }
}

impl Fmp4Muxer {
    /// A muxer for the recordable ones of `tracks`: H.264 and HEVC video, AAC and
    /// Opus audio, each with its configuration record (Opus may do without). Other
    /// tracks are skipped, see [`skipped_tracks`](Self::skipped_tracks); an error
    /// when none is left.
    pub fn new(tracks: &[TrackInfo], config: Fmp4Config) -> Result<Self, Fmp4Error> {
        let mut recorded: Vec<Track> = Vec::new();
        let mut skipped = Vec::new();
        let mut skipped_configs = Vec::new();
        for t in tracks {
            let codec = t.codec.id();
            let duplicate = recorded.iter().any(|r| r.id == t.id)
                || skipped.iter().any(|s: &SkippedTrack| s.track == t.id);
            let track_id = u32::try_from(recorded.len()).unwrap_or(u32::MAX - 1) + 1;
            let setup = if duplicate {
                Err(SkipReason::DuplicateTrack)
            } else {
                TrackSetup::new(&t.codec, track_id)
            };
            match setup {
                Ok(setup) => {
                    recorded.push(Track {
                        id: t.id,
                        codec,
                        config: t.codec.config().clone(),
                        max_fragment: 0,
                        setup,
                        pending: Vec::new(),
                        pending_bytes: 0,
                        pending_duration: 0,
                        held: None,
                        next_decode: 0,
                        last_duration: None,
                        keyframe_seen: false,
                    });
                }
                Err(reason) => {
                    skipped.push(SkippedTrack {
                        track: t.id,
                        codec,
                        reason,
                    });
                    skipped_configs.push(t.codec.config().clone());
                }
            }
        }
        if recorded.is_empty() {
            return Err(Fmp4Error::NoRecordableTracks(skipped));
        }
        let video = recorded.iter().position(|t| t.setup.video);
        let max = if video.is_some() {
            config.max_video_fragment
        } else {
            config.max_fragment
        };
        for t in &mut recorded {
            let units =
                max.as_nanos().saturating_mul(u128::from(t.setup.timescale)) / 1_000_000_000;
            t.max_fragment = u64::try_from(units).unwrap_or(u64::MAX);
        }
        let lead = video.unwrap_or_default();
        let setups: Vec<&TrackSetup> = recorded.iter().map(|t| &t.setup).collect();
        let init = Bytes::from(init_segment(&setups));
        let config = Fmp4Config {
            max_fragment_bytes: config.max_fragment_bytes.min(MAX_FRAGMENT_BYTES),
            ..config
        };
        Ok(Self {
            config,
            tracks: recorded,
            skipped,
            skipped_configs,
            lead,
            init,
            origin: None,
            sequence: 1,
            stats: Fmp4Stats::default(),
        })
    }

    /// The tracks left out, and why.
    pub fn skipped_tracks(&self) -> &[SkippedTrack] {
        &self.skipped
    }

    /// The recorded tracks, in the order of their MP4 track ids (1, 2, ...).
    pub fn recorded_tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.tracks.iter().map(|t| t.id)
    }

    /// Appends the init segment: `ftyp` and `moov`. Write it once, first.
    pub fn write_init(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.init);
    }

    /// Takes one frame. Media frames are buffered as samples; when they complete a
    /// fragment it is appended to `out` (see the module documentation for when).
    ///
    /// Configuration frames equal to the track's configuration, empty frames and
    /// frames of skipped tracks write nothing. Errors (nothing is written, the muxer
    /// is unchanged): [`Fmp4Error::UnknownTrack`]; [`Fmp4Error::ConfigChanged`] for
    /// a new configuration or codec on a track; [`Fmp4Error::InvalidFrame`] for
    /// video whose NAL unit lengths do not add up; [`Fmp4Error::FrameTooLarge`].
    pub fn push_frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Fmp4Error> {
        let Some(index) = self.tracks.iter().position(|t| t.id == frame.track) else {
            return self.skipped_frame(frame);
        };
        let Some(track) = self.tracks.get(index) else {
            return Err(Fmp4Error::UnknownTrack(frame.track));
        };
        if frame.codec != track.codec {
            return Err(Fmp4Error::ConfigChanged(frame.track));
        }
        if frame.is_config() {
            return if frame.data == track.config {
                Ok(())
            } else {
                Err(Fmp4Error::ConfigChanged(frame.track))
            };
        }
        if frame.data.is_empty() {
            return Ok(());
        }
        if frame.data.len() > MAX_SAMPLE_SIZE {
            return Err(Fmp4Error::FrameTooLarge {
                track: frame.track,
                size: frame.data.len(),
            });
        }
        let data = track.sample_data(frame)?;
        let sync = !track.setup.video || frame.is_keyframe();
        if !sync && !track.keyframe_seen {
            self.stats.dropped_before_keyframe =
                self.stats.dropped_before_keyframe.saturating_add(1);
            return Ok(());
        }

        // nothing fails from here on
        let origin = *self.origin.get_or_insert(frame.dts.ticks());
        let lead = index == self.lead;
        let Some(track) = self.tracks.get_mut(index) else {
            return Ok(());
        };
        let target = track.to_timescale(frame.dts.ticks().saturating_sub(origin));
        let cto = if track.setup.video {
            track.offset_to_timescale(frame.pts.ticks().saturating_sub(frame.dts.ticks()))
        } else {
            0
        };
        let decode = track.close_held(target);
        let video_lead = lead && track.setup.video;
        if video_lead && sync {
            self.write_fragment(out);
        }
        let Some(track) = self.tracks.get_mut(index) else {
            return Ok(());
        };
        track.keyframe_seen |= sync;
        track.held = Some(Sample {
            data,
            decode,
            duration: 0,
            cto,
            sync,
        });
        if self.fragment_full() {
            self.write_fragment(out);
        }
        Ok(())
    }

    /// Frames of tracks that are not recorded: ignored, unless the track's codec or
    /// (for a track skipped for its configuration) its configuration changes.
    fn skipped_frame(&self, frame: &Frame) -> Result<(), Fmp4Error> {
        let Some(i) = self.skipped.iter().position(|s| s.track == frame.track) else {
            return Err(Fmp4Error::UnknownTrack(frame.track));
        };
        let (Some(skipped), Some(config)) = (self.skipped.get(i), self.skipped_configs.get(i))
        else {
            return Ok(());
        };
        if frame.codec != skipped.codec {
            return Err(Fmp4Error::ConfigChanged(frame.track));
        }
        let retry = matches!(
            skipped.reason,
            SkipReason::MissingConfig | SkipReason::InvalidConfig(_)
        );
        if retry && frame.is_config() && !frame.data.is_empty() && frame.data != *config {
            return Err(Fmp4Error::ConfigChanged(frame.track));
        }
        Ok(())
    }

    /// Whether the buffered samples make a complete fragment by the size limits.
    fn fragment_full(&self) -> bool {
        let mut bytes = 0usize;
        let mut samples = 0usize;
        let mut full = false;
        for t in self.tracks.iter().filter(|t| !t.pending.is_empty()) {
            bytes = bytes.saturating_add(t.pending_bytes);
            samples = samples.saturating_add(t.pending.len());
            full |= t.pending_duration >= t.max_fragment;
        }
        full || bytes >= self.config.max_fragment_bytes || samples >= MAX_FRAGMENT_SAMPLES
    }

    /// Writes everything buffered, the held-back last sample of each track included
    /// (lasting as long as the sample before it, or by default 1/30 s of video, one
    /// AAC frame, the Opus packet's duration). For the end of a recording.
    ///
    /// Frames pushed after a flush continue the same timeline (no earlier than the
    /// end of what was written).
    pub fn flush(&mut self, out: &mut BytesMut) {
        for i in 0..self.tracks.len() {
            if let Some(t) = self.tracks.get_mut(i) {
                t.close_held_guessing();
            }
            // one sample at a time over the limits, as in push_frame: keeps data
            // offsets within 32 bits whatever the number of tracks
            if self.fragment_full() {
                self.write_fragment(out);
            }
        }
        self.write_fragment(out);
    }

    /// Like [`flush`](Self::flush), but the held-back video samples last until
    /// `end`, the decode time of the frame that starts the next recording (a
    /// keyframe, when a recorder cuts segments). Audio keeps its own durations;
    /// video already at or past `end` falls back to the guess of `flush`.
    pub fn flush_until(&mut self, end: Timestamp, out: &mut BytesMut) {
        if let Some(origin) = self.origin {
            for i in 0..self.tracks.len() {
                let Some(t) = self.tracks.get_mut(i).filter(|t| t.setup.video) else {
                    continue;
                };
                let target = t.to_timescale(end.ticks().saturating_sub(origin));
                if t.held.as_ref().is_some_and(|h| target > h.decode) {
                    t.close_held(target);
                }
                if self.fragment_full() {
                    self.write_fragment(out);
                }
            }
        }
        self.flush(out);
    }

    /// Media time buffered and not written yet: the longest over the tracks of the
    /// span from the first buffered sample to the last (which is held back until
    /// the next one arrives).
    pub fn buffered_duration(&self) -> Duration {
        self.tracks
            .iter()
            .map(|t| t.to_duration(t.pending_duration))
            .max()
            .unwrap_or_default()
    }

    /// Whether the fragment being buffered starts with a keyframe of the lead video
    /// track: true for audio-only recordings, false when no lead video is buffered.
    /// Fragments end before keyframes, so this is false only after a fragment was
    /// cut by the size limits inside a long group of pictures (or after a flush).
    pub fn fragment_start_is_keyframe(&self) -> bool {
        let Some(t) = self.tracks.get(self.lead) else {
            return true;
        };
        !t.setup.video
            || t.pending
                .first()
                .or(t.held.as_ref())
                .is_some_and(|s| s.sync)
    }

    /// The media time written so far (fragments appended to the output): where the
    /// lead track's written samples end.
    pub fn written_duration(&self) -> Duration {
        self.tracks
            .get(self.lead)
            .map(|t| t.to_duration(t.next_decode))
            .unwrap_or_default()
    }

    /// Counters of what was written and dropped.
    pub fn stats(&self) -> Fmp4Stats {
        self.stats
    }

    /// Appends one `moof` + `mdat` with every queued sample, if there is any.
    fn write_fragment(&mut self, out: &mut BytesMut) {
        let with: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks.get(i).is_some_and(|t| !t.pending.is_empty()))
            .collect();
        if with.is_empty() {
            return;
        }
        let tracks: Vec<&Track> = with.iter().filter_map(|&i| self.tracks.get(i)).collect();
        // sizes first, for the data offsets; the caps on sample and fragment sizes
        // keep every one far from the 32-bit limits
        let moof_size: u64 = 8 + 16 + tracks.iter().map(|t| t.traf_size()).sum::<u64>();
        let payload: u64 = tracks.iter().map(|t| t.pending_bytes as u64).sum();
        let large = payload + 8 > u64::from(u32::MAX);
        let mdat_header: u64 = if large { 16 } else { 8 };
        out.reserve(usize::try_from(moof_size + mdat_header + payload).unwrap_or(0));
        let start = out.len();

        out.put_u32(u32::try_from(moof_size).unwrap_or(u32::MAX));
        out.put_slice(b"moof");
        out.put_u32(16);
        out.put_slice(b"mfhd");
        out.put_u32(0);
        out.put_u32(self.sequence);
        let mut data_offset = moof_size + mdat_header;
        for t in &tracks {
            let video = t.setup.video;
            out.put_u32(u32::try_from(t.traf_size()).unwrap_or(u32::MAX));
            out.put_slice(b"traf");
            // tfhd: default-base-is-moof; audio samples are all sync by default
            out.put_u32(if video { 16 } else { 20 });
            out.put_slice(b"tfhd");
            if video {
                out.put_u32(0x02_0000);
                out.put_u32(t.setup.track_id);
            } else {
                out.put_u32(0x02_0020);
                out.put_u32(t.setup.track_id);
                out.put_u32(FLAGS_SYNC);
            }
            out.put_u32(20);
            out.put_slice(b"tfdt");
            out.put_u32(0x0100_0000); // version 1: 64-bit time
            out.put_u64(t.pending.first().map_or(t.next_decode, |s| s.decode));
            // trun version 1: data offset, duration, size, and for video flags and
            // signed composition offsets
            let per_sample = if video { 16 } else { 8 };
            out.put_u32(u32::try_from(20 + per_sample * t.pending.len() as u64).unwrap_or(0));
            out.put_slice(b"trun");
            out.put_u32(if video { 0x0100_0F01 } else { 0x0100_0301 });
            out.put_u32(u32::try_from(t.pending.len()).unwrap_or(u32::MAX));
            out.put_i32(i32::try_from(data_offset).unwrap_or(i32::MAX));
            for s in &t.pending {
                out.put_u32(s.duration);
                out.put_u32(u32::try_from(s.data.len()).unwrap_or(u32::MAX));
                if video {
                    out.put_u32(if s.sync { FLAGS_SYNC } else { FLAGS_NON_SYNC });
                    out.put_i32(s.cto);
                }
            }
            data_offset += t.pending_bytes as u64;
        }
        if large {
            out.put_u32(1);
            out.put_slice(b"mdat");
            out.put_u64(payload + 16);
        } else {
            out.put_u32(u32::try_from(payload + 8).unwrap_or(u32::MAX));
            out.put_slice(b"mdat");
        }
        for t in &tracks {
            for s in &t.pending {
                out.put_slice(&s.data);
            }
        }

        self.sequence = self.sequence.wrapping_add(1);
        self.stats.fragments += 1;
        self.stats.fragment_bytes += (out.len() - start) as u64;
        for &i in &with {
            let Some(t) = self.tracks.get_mut(i) else {
                continue;
            };
            self.stats.samples += t.pending.len() as u64;
            if let Some(last) = t.pending.last() {
                t.next_decode = last.decode.saturating_add(u64::from(last.duration));
            }
            t.pending.clear();
            t.pending_bytes = 0;
            t.pending_duration = 0;
        }
    }
}
