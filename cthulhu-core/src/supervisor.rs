//! Destination supervisor.
