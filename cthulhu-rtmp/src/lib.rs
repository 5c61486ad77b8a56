//! Cthulhu RTMP.
