//! Browser playback for Cthulhu.
//!
//! - [`hls`]: LL-HLS with fMP4/CMAF parts, and the same playlist for players
//!   without LL support (plain HLS): one muxer per stream, started by the first
//!   request and stopped when idle, segments and parts kept in memory as shared
//!   `Bytes`, playlists with blocking reloads.
//!
//! Everything here reads from a [`cthulhu_core::Hub`] like the RTMP and SRT
//! players do; the HTTP layer and the listener (`[playback] listen`) sit on top.
//! HTTP-FLV and WebSocket-FLV are to follow.

pub mod hls;
