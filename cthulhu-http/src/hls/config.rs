//! LL-HLS settings.

use std::time::Duration;

use super::HlsError;

/// Settings of the LL-HLS service.
///
/// [`validate`](Self::validate) checks them; [`HlsService::new`](super::HlsService::new)
/// refuses settings that do not validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsConfig {
    /// The Part Target Duration (`EXT-X-PART-INF:PART-TARGET`): parts are cut at the
    /// last frame boundary that keeps them within it. 200 ms by default; 50 ms to 2 s.
    pub part_target: Duration,
    /// A segment ends at the first keyframe after it covers this much media time (so
    /// segments follow the GOP), or for audio-only streams at the first frame after
    /// it. 1 s by default; at least `part_target`.
    pub segment_target: Duration,
    /// The longest segment: a segment without a keyframe for this long is cut
    /// anyway, at a frame that is not one (the next segment then does not start
    /// independently). Also the most the `EXT-X-TARGETDURATION` can be. 10 s by
    /// default; at least `segment_target`.
    pub max_segment: Duration,
    /// Complete segments listed in the playlist (at least 7, the default). Two more
    /// stay downloadable after they left the playlist, for clients that loaded it
    /// just before.
    pub segments_kept: usize,
    /// The most bytes of media one stream keeps in memory (segments, parts and init
    /// segments): past it the oldest segments are dropped even if fewer than
    /// `segments_kept` remain. 128 MiB by default; at least 4 MiB.
    pub max_bytes: usize,
    /// A part is cut early once it holds this many bytes; frames larger than this
    /// are dropped. 8 MiB by default; at least 64 KiB and at most `max_bytes / 4`.
    pub max_part_bytes: usize,
    /// A stream's muxer stops when no request for it came for this long. 30 s by
    /// default; at least 1 s.
    pub idle_timeout: Duration,
    /// The longest a request waits for a part or segment that does not exist yet
    /// (blocking playlist reloads, preload hints, the first playlist of a stream).
    /// The wait is also bounded by three target durations, as the spec says. 10 s
    /// by default; 100 ms to 60 s.
    pub max_blocking_wait: Duration,
    /// When the publisher leaves, the playlist stays (without new segments) for this
    /// long; a publisher coming back within it continues the same playlist after a
    /// discontinuity. After it the playlist ends (`EXT-X-ENDLIST`). 10 s by default.
    pub publisher_grace: Duration,
    /// The most streams muxed at once; a request that would start one more gets
    /// [`HlsError::TooManyStreams`]. 1,024 by default; at least 1.
    pub max_streams: usize,
    /// A client counts as a viewer of a stream until it made no request for this
    /// long. 10 s by default; at least 1 s.
    pub viewer_timeout: Duration,
    /// The most viewers counted per stream (clients are told apart by IP address);
    /// more are served but not counted separately. 4,096 by default; at least 1.
    pub max_viewers: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            max_segment: Duration::from_secs(10),
            segments_kept: 7,
            max_bytes: 128 << 20,
            max_part_bytes: 8 << 20,
            idle_timeout: Duration::from_secs(30),
            max_blocking_wait: Duration::from_secs(10),
            publisher_grace: Duration::from_secs(10),
            max_streams: 1024,
            viewer_timeout: Duration::from_secs(10),
            max_viewers: 4096,
        }
    }
}

impl HlsConfig {
    /// Checks the settings against the bounds documented on each field.
    pub fn validate(&self) -> Result<(), HlsError> {
        let bad = |what: String| Err(HlsError::Config(what));
        if self.part_target < Duration::from_millis(50) || self.part_target > Duration::from_secs(2)
        {
            return bad(format!(
                "part_target must be 50 ms to 2 s, not {:?}",
                self.part_target
            ));
        }
        if self.segment_target < self.part_target {
            return bad("segment_target must be at least part_target".into());
        }
        if self.max_segment < self.segment_target || self.max_segment > Duration::from_secs(60) {
            return bad("max_segment must be at least segment_target and at most 60 s".into());
        }
        if self.segments_kept < 7 || self.segments_kept > 1000 {
            return bad(format!(
                "segments_kept must be 7 to 1000, not {}",
                self.segments_kept
            ));
        }
        if self.max_bytes < 4 << 20 {
            return bad("max_bytes must be at least 4 MiB".into());
        }
        if self.max_part_bytes < 64 << 10 || self.max_part_bytes > self.max_bytes / 4 {
            return bad("max_part_bytes must be at least 64 KiB and at most max_bytes / 4".into());
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return bad("idle_timeout must be at least 1 s".into());
        }
        if self.max_blocking_wait < Duration::from_millis(100)
            || self.max_blocking_wait > Duration::from_secs(60)
        {
            return bad("max_blocking_wait must be 100 ms to 60 s".into());
        }
        if self.publisher_grace > Duration::from_secs(3600) {
            return bad("publisher_grace must be at most an hour".into());
        }
        if self.max_streams == 0 {
            return bad("max_streams must be at least 1".into());
        }
        if self.viewer_timeout < Duration::from_secs(1) {
            return bad("viewer_timeout must be at least 1 s".into());
        }
        if self.max_viewers == 0 {
            return bad("max_viewers must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bounds_are_enforced() {
        assert!(HlsConfig::default().validate().is_ok());
        let bad = [
            HlsConfig {
                part_target: Duration::from_millis(10),
                ..HlsConfig::default()
            },
            HlsConfig {
                segments_kept: 6,
                ..HlsConfig::default()
            },
            HlsConfig {
                segment_target: Duration::from_millis(100),
                ..HlsConfig::default()
            },
            HlsConfig {
                max_segment: Duration::from_millis(500),
                ..HlsConfig::default()
            },
            HlsConfig {
                max_part_bytes: 1 << 30,
                ..HlsConfig::default()
            },
            HlsConfig {
                max_streams: 0,
                ..HlsConfig::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(HlsError::Config(_))), "{c:?}");
        }
    }
}
