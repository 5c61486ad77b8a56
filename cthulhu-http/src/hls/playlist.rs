//! Playlists, written by hand: the Rust m3u8 crates lack the LL-HLS tags.
//!
//! The media playlist (RFC 8216bis, version 6 for `EXT-X-MAP`):
//! ```text
//! #EXTM3U
//! #EXT-X-VERSION:6
//! #EXT-X-TARGETDURATION:2
//! #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.60000
//! #EXT-X-PART-INF:PART-TARGET=0.20000
//! #EXT-X-MEDIA-SEQUENCE:12
//! #EXT-X-DISCONTINUITY-SEQUENCE:1          (when not 0)
//! #EXT-X-MAP:URI="init-SID-1.mp4?key=K"
//! #EXTINF:2.00000,                          (older segments: no parts)
//! seg-SID-12.m4s?key=K
//! ...
//! #EXT-X-DISCONTINUITY                      (before a segment after a new init)
//! #EXT-X-MAP:URI="init-SID-2.mp4?key=K"
//! #EXT-X-PART:DURATION=0.20000,URI="part-SID-18-0.m4s?key=K",INDEPENDENT=YES
//! ...                                       (recent segments: their parts first)
//! #EXTINF:2.00000,
//! seg-SID-18.m4s?key=K
//! #EXT-X-PART:DURATION=0.20000,URI="part-SID-19-0.m4s?key=K",INDEPENDENT=YES
//! #EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-SID-19-1.m4s?key=K"
//! ```
//! A player without LL-HLS support skips the tags it does not know and plays the
//! complete segments. The multivariant playlist names the media playlist with one
//! `EXT-X-STREAM-INF` (BANDWIDTH, AVERAGE-BANDWIDTH, CODECS, RESOLUTION and
//! FRAME-RATE when known).

use std::fmt::Write;

use cthulhu_core::codec::{aac, h264, h265};
use cthulhu_core::{Codec, MediaKind, TrackInfo};

use super::window::{PART_LIST_TARGETS, SegmentEntry, Window};

/// The names of a stream's resources, relative to its playlists.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Names<'a> {
    /// The muxer session: part of every media URI, so that a restarted muxer never
    /// reuses the name of an immutable resource.
    pub(crate) session: &'a str,
    /// Appended to every URI: empty, or `?` and the query to carry.
    pub(crate) suffix: &'a str,
}

impl Names<'_> {
    fn init(&self, out: &mut String, id: u64) {
        let _ = write!(out, "init-{}-{id}.mp4{}", self.session, self.suffix);
    }
    fn segment(&self, out: &mut String, msn: u64) {
        let _ = write!(out, "seg-{}-{msn}.m4s{}", self.session, self.suffix);
    }
    fn part(&self, out: &mut String, msn: u64, index: usize) {
        let _ = write!(
            out,
            "part-{}-{msn}-{index}.m4s{}",
            self.session, self.suffix
        );
    }
}

/// Seconds with 5 decimals, rounded down.
pub(crate) fn secs(out: &mut String, ticks: i64) {
    let t = ticks.max(0);
    let _ = write!(out, "{}.{:05}", t / 90_000, (t % 90_000) * 100_000 / 90_000);
}

fn map(out: &mut String, names: &Names<'_>, init: u64) {
    out.push_str("#EXT-X-MAP:URI=\"");
    names.init(out, init);
    out.push_str("\"\n");
}

fn parts(out: &mut String, names: &Names<'_>, seg: &SegmentEntry) {
    for (i, p) in seg.parts.iter().enumerate() {
        out.push_str("#EXT-X-PART:DURATION=");
        secs(out, p.duration);
        out.push_str(",URI=\"");
        names.part(out, seg.msn, i);
        out.push('"');
        if p.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        out.push('\n');
    }
}

/// The media playlist. Needs the target duration (the first complete segment).
pub(crate) fn media_playlist(w: &Window, names: &Names<'_>) -> String {
    let mut out = String::with_capacity(2048);
    let td = w.target_duration.unwrap_or(1);
    let pt = w.part_target.unwrap_or(w.cfg.part_target);
    let listed: Vec<&SegmentEntry> = w.listed().collect();
    let first = listed.first().copied().or(w.open.as_ref());
    out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td}");
    out.push_str("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=");
    secs(&mut out, pt.saturating_mul(3));
    out.push_str("\n#EXT-X-PART-INF:PART-TARGET=");
    secs(&mut out, pt);
    out.push('\n');
    let _ = writeln!(
        out,
        "#EXT-X-MEDIA-SEQUENCE:{}",
        first.map_or(w.next_msn, |s| s.msn)
    );
    if let Some(f) = first
        && f.dsn > 0
    {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", f.dsn);
    }
    let total: i64 =
        listed.iter().map(|s| s.duration).sum::<i64>() + w.open.as_ref().map_or(0, |o| o.duration);
    let part_horizon = total.saturating_sub(
        i64::try_from(td)
            .unwrap_or(i64::MAX)
            .saturating_mul(90_000 * PART_LIST_TARGETS),
    );
    let mut prev_init: Option<u64> = None;
    let mut end = 0i64;
    let head = |out: &mut String, seg: &SegmentEntry, prev_init: &mut Option<u64>| {
        if prev_init.is_some() && seg.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if *prev_init != Some(seg.init) {
            map(out, names, seg.init);
        }
        *prev_init = Some(seg.init);
    };
    for seg in &listed {
        head(&mut out, seg, &mut prev_init);
        end += seg.duration;
        if end > part_horizon {
            parts(&mut out, names, seg);
        }
        out.push_str("#EXTINF:");
        secs(&mut out, seg.duration);
        out.push_str(",\n");
        names.segment(&mut out, seg.msn);
        out.push('\n');
    }
    if let Some(open) = &w.open {
        head(&mut out, open, &mut prev_init);
        parts(&mut out, names, open);
    }
    if w.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    } else if w.live && (w.open.is_some() || !w.pending_discontinuity()) {
        let (msn, index) = w.current();
        out.push_str("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"");
        names.part(&mut out, msn, index);
        out.push_str("\"\n");
    }
    out
}

/// The multivariant playlist: one variant, the media playlist.
pub(crate) fn multivariant(w: &Window, suffix: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("#EXTM3U\n");
    let listed: Vec<&SegmentEntry> = w.listed().collect();
    let mut peak = 0u64;
    let mut bytes = 0u64;
    let mut ticks = 0i64;
    let mut frames = 0u64;
    let mut video_ticks = 0i64;
    for s in &listed {
        let b = s.data.len() as u64;
        if s.duration > 0 {
            peak = peak.max(bits_per_second(b, s.duration));
        }
        bytes += b;
        ticks += s.duration;
        if s.video_frames > 0 {
            frames += u64::from(s.video_frames);
            video_ticks += s.duration;
        }
    }
    let average = if ticks > 0 {
        bits_per_second(bytes, ticks)
    } else {
        0
    };
    // every codec of every listed segment's init
    let mut codecs: Vec<String> = Vec::new();
    let mut resolution = None;
    let mut inits: Vec<u64> = listed.iter().map(|s| s.init).collect();
    inits.extend(w.current_init);
    for id in inits {
        let Some(init) = w.inits.iter().find(|e| e.id == id) else {
            continue;
        };
        for t in &init.tracks {
            if let Some(c) = codec_string(t)
                && !codecs.contains(&c)
            {
                codecs.push(c);
            }
            if t.kind() == MediaKind::Video
                && let (Some(wd), Some(ht)) = (t.details.width, t.details.height)
            {
                resolution = Some((wd, ht));
            }
        }
    }
    let _ = write!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
        peak.max(1),
        average.max(1)
    );
    if !codecs.is_empty() {
        let _ = write!(out, ",CODECS=\"{}\"", codecs.join(","));
    }
    if let Some((wd, ht)) = resolution {
        let _ = write!(out, ",RESOLUTION={wd}x{ht}");
    }
    if frames > 0 && video_ticks > 0 {
        let millifps = frames * 90_000_000 / u64::try_from(video_ticks).unwrap_or(u64::MAX);
        let _ = write!(
            out,
            ",FRAME-RATE={}.{:03}",
            millifps / 1000,
            millifps % 1000
        );
    }
    let _ = write!(out, "\nmedia.m3u8{suffix}\n");
    out
}

fn bits_per_second(bytes: u64, ticks: i64) -> u64 {
    let t = u128::try_from(ticks.max(1)).unwrap_or(1);
    u64::try_from(u128::from(bytes) * 8 * 90_000 / t).unwrap_or(u64::MAX)
}

/// The RFC 6381 codec string of a track (`avc1.64001f`, `hvc1.1.6.L93.B0`,
/// `mp4a.40.2`, `opus`), if its configuration parses.
pub(crate) fn codec_string(t: &TrackInfo) -> Option<String> {
    match &t.codec {
        Codec::H264 { config } => {
            let c = h264::parse_avc_config(config).ok()?;
            Some(format!(
                "avc1.{:02x}{:02x}{:02x}",
                c.profile_idc, c.profile_compatibility, c.level_idc
            ))
        }
        Codec::H265 { config } => {
            let c = h265::parse_hevc_config(config).ok()?;
            let space = match c.general_profile_space {
                1 => "A",
                2 => "B",
                3 => "C",
                _ => "",
            };
            let mut s = format!(
                "hvc1.{space}{}.{:X}.{}{}",
                c.general_profile_idc,
                c.general_profile_compatibility_flags.reverse_bits(),
                if c.general_tier_flag { 'H' } else { 'L' },
                c.general_level_idc
            );
            let flags = c.general_constraint_indicator_flags.to_be_bytes();
            // the 48 bits are the low six bytes; trailing zero bytes are left out
            let bytes = flags.get(2..).unwrap_or(&[]);
            let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            for b in bytes.iter().take(used) {
                let _ = write!(s, ".{b:X}");
            }
            Some(s)
        }
        Codec::Aac { config } => {
            let asc = aac::parse_asc(config).ok()?;
            let aot = if asc.ps {
                29
            } else if asc.sbr {
                5
            } else {
                asc.object_type
            };
            Some(format!("mp4a.40.{aot}"))
        }
        Codec::Opus { .. } => Some("opus".into()),
        _ => None,
    }
}
