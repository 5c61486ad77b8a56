//! Fuzzes the RTMP chunk and message layer as a stateful server session, sans-IO,
//! the way `cthulhu_rtmp::server`'s `Connection` drives it: every read of the peer
//! goes through an `InboundGuard` (in the pieces it allows: it stops after each
//! command) before rml_rtmp's `ServerSession` sees it, and the session's events are
//! handled as the server handles them (connect, publish and play accepted, or
//! refused; audio, video and aggregates through `ToCore`; metadata converted).
//!
//! Input: one configuration byte, one byte that picks the read sizes, then what a
//! client sends after the handshake (C0+C1+C2). Configuration bits: 0 = small
//! limits instead of the server's defaults (so that every bound is reachable within
//! the input size), 1 = publish refused, 2 = play refused.
//!
//! A panic inside rml_rtmp is contained (`catch_unwind`, as the server does: it
//! closes that connection) and is not a finding. A finding is: a panic anywhere
//! else, a stack overflow, running out of memory, or a message that rml_rtmp
//! completes although it breaks the guard's bounds. The last is checked with a
//! second rml_rtmp `ChunkDeserializer` fed exactly the bytes that passed the guard.
//!
//! The session runs on a thread with a 2 MiB stack, a Tokio worker's default.

#![no_main]

use cthulhu_fuzz::{Reads, contained, on_task_stack};
use cthulhu_rtmp::amf0::{self, Amf0Limits};
use cthulhu_rtmp::inbound::{InboundGuard, InboundLimits};
use cthulhu_rtmp::to_core::{self, ToCore};
use libfuzzer_sys::fuzz_target;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// Read buffer of a connection until it publishes, and once it does (server.rs).
const READ_BUF: usize = 2048;
const PUBLISH_READ_BUF: usize = 16 * 1024;

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const AGGREGATE: u8 = 22;

fuzz_target!(|data: &[u8]| on_task_stack(data, run));

fn run(data: &[u8]) {
    let [conf, split, input @ ..] = data else {
        return;
    };
    let limits = if conf & 1 == 0 {
        InboundLimits::default()
    } else {
        InboundLimits {
            max_command_bytes: 2000,
            max_media_bytes: 40_000,
            max_chunk_streams: 4,
            amf0: Amf0Limits {
                max_depth: 3,
                max_values: 64,
            },
            ..InboundLimits::default()
        }
    };
    let mut config = ServerSessionConfig::new();
    config.chunk_size = 4096;
    let Some(Ok((session, _initial))) = contained(|| ServerSession::new(config)) else {
        return;
    };
    let mut conn = Conn {
        session,
        guard: InboundGuard::new(limits),
        limits,
        guard_publishing: false,
        refuse_publish: conf & 2 != 0,
        refuse_play: conf & 4 != 0,
        publishing: None,
        playing: false,
        closing: false,
        mirror: Some(ChunkDeserializer::new()),
    };
    let mut reads = Reads::new(*split);
    let mut rest = input;
    while !rest.is_empty() {
        let max = if conn.publishing.is_some() {
            PUBLISH_READ_BUF
        } else {
            READ_BUF
        };
        let (read, after) = rest.split_at(reads.next(max).min(rest.len()));
        rest = after;
        if conn.handle_input(read).is_err() || conn.closing {
            return;
        }
    }
}

/// The connection closed (an error the server would log).
struct Closed;

struct Conn {
    session: ServerSession,
    guard: InboundGuard,
    limits: InboundLimits,
    /// Whether `guard.start_publishing()` was called.
    guard_publishing: bool,
    refuse_publish: bool,
    refuse_play: bool,
    publishing: Option<ToCore>,
    playing: bool,
    /// The server set `closing` (a refusal, or media ToCore refused).
    closing: bool,
    /// A second deserializer on exactly the bytes the guard passed; None once it
    /// failed (the session's own one failed there too and the connection closed).
    mirror: Option<ChunkDeserializer>,
}

impl Conn {
    /// `Connection::handle_input`.
    fn handle_input(&mut self, mut data: &[u8]) -> Result<(), Closed> {
        while !data.is_empty() {
            let n = self.guard.check(data).map_err(|_| Closed)?;
            assert!(
                n > 0 && n <= data.len(),
                "guard returned {n} for {} bytes",
                data.len()
            );
            let (now, rest) = data.split_at(n);
            self.check_passed(now);
            self.session_input(now)?;
            if self.closing {
                break;
            }
            data = rest;
        }
        Ok(())
    }

    /// Every message rml_rtmp completes from what the guard passed is within the
    /// guard's bounds.
    fn check_passed(&mut self, passed: &[u8]) {
        let Some(de) = self.mirror.as_mut() else {
            return;
        };
        // A message that started before the publish was accepted was bounded by
        // the command limit, which is the smaller: the media limit holds either way.
        let media_limit = if self.guard_publishing {
            self.limits.max_media_bytes
        } else {
            self.limits.max_command_bytes
        };
        let mut input = passed;
        loop {
            let next = contained(|| de.get_next_message(input));
            input = &[];
            let m = match next {
                Some(Ok(Some(m))) => m,
                Some(Ok(None)) => return,
                _ => {
                    self.mirror = None;
                    return;
                }
            };
            let limit = match m.type_id {
                AUDIO | VIDEO | AGGREGATE => media_limit,
                _ => self.limits.max_command_bytes,
            };
            assert!(
                m.data.len() <= limit,
                "rml_rtmp completed a message of type {} with {} bytes, over {limit}",
                m.type_id,
                m.data.len()
            );
            if let Some(body) = amf0::decoded_body(m.type_id, &m.data) {
                let r = amf0::check(body, &self.limits.amf0);
                assert!(
                    r.is_ok(),
                    "rml_rtmp completed a type {} message the guard should have refused: {r:?}",
                    m.type_id
                );
            }
            if m.type_id == 1 {
                // As the session handles it.
                match contained(|| m.to_rtmp_message()) {
                    Some(Ok(RtmpMessage::SetChunkSize { size })) => {
                        if de.set_max_chunk_size(size as usize).is_err() {
                            self.mirror = None;
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        self.mirror = None;
                        return;
                    }
                }
            }
        }
    }

    /// `Connection::session_input`.
    fn session_input(&mut self, data: &[u8]) -> Result<(), Closed> {
        let results = match contained(|| self.session.handle_input(data)) {
            Some(Ok(r)) => r,
            _ => return Err(Closed),
        };
        let events = self.queue_results(results);
        for ev in events {
            self.handle_event(ev)?;
            if self.closing {
                break;
            }
        }
        Ok(())
    }

    /// `Connection::queue_results` (the output is dropped).
    fn queue_results(&mut self, results: Vec<ServerSessionResult>) -> Vec<ServerSessionEvent> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(_) => {}
                ServerSessionResult::RaisedEvent(e) => events.push(e),
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    if payload.type_id == AGGREGATE
                        && let Some(conv) = &mut self.publishing
                        && conv
                            .aggregate(&payload.data, payload.timestamp.value)
                            .is_err()
                    {
                        self.closing = true;
                    }
                }
            }
        }
        events
    }

    /// `Connection::handle_event`, with a router that allows everything unless told
    /// to refuse.
    fn handle_event(&mut self, ev: ServerSessionEvent) -> Result<(), Closed> {
        match ev {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                self.accept(request_id)?;
            }
            ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                if self.busy() || self.refuse_publish {
                    return self.refuse(request_id, "NetStream.Publish.Unauthorized");
                }
                self.accept(request_id)?;
                self.guard.start_publishing();
                self.guard_publishing = true;
                self.publishing = Some(ToCore::new());
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                if self.busy() || self.refuse_play {
                    return self.refuse(request_id, "NetStream.Play.StreamNotFound");
                }
                self.accept(request_id)?;
                self.playing = true;
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                if let Some(conv) = &mut self.publishing
                    && conv.video(&data, timestamp.value).is_err()
                {
                    self.closing = true;
                }
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                if let Some(conv) = &mut self.publishing
                    && conv.audio(&data, timestamp.value).is_err()
                {
                    self.closing = true;
                }
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. }
                if self.publishing.is_some() =>
            {
                let _ = to_core::metadata(&metadata);
            }
            ServerSessionEvent::PublishStreamFinished { .. } => self.publishing = None,
            ServerSessionEvent::PlayStreamFinished { .. } => self.playing = false,
            _ => {}
        }
        Ok(())
    }

    fn busy(&self) -> bool {
        self.publishing.is_some() || self.playing
    }

    fn accept(&mut self, request_id: u32) -> Result<(), Closed> {
        match contained(|| self.session.accept_request(request_id)) {
            Some(Ok(r)) => {
                self.queue_results(r);
                Ok(())
            }
            _ => Err(Closed),
        }
    }

    fn refuse(&mut self, request_id: u32, code: &str) -> Result<(), Closed> {
        match contained(|| self.session.reject_request(request_id, code, "refused")) {
            Some(Ok(r)) => {
                self.queue_results(r);
                self.closing = true;
                Ok(())
            }
            _ => Err(Closed),
        }
    }
}
