//! Container formats.
