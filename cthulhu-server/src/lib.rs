//! `cthulhu-server`: the Cthulhu reference server, as a library.
//!
//! With no arguments it runs a working proxy on embedded defaults (RTMP on
//! 0.0.0.0:1935, data in `./cthulhu-data`, one stream `live/main` whose key is created
//! on first start). `--config FILE` reads a TOML file; `check` validates one; `probe`
//! tests a destination before going live; `token create` and `admin reset-password`
//! / `admin reset-totp` act on the store, also while the server runs.
//!
//! [`Server::start`] binds every listener, applies the configuration and the store,
//! and returns a [`ServerHandle`] with the bound addresses; the binary (`main.rs`) is
//! [`cli::main`]. Tests start servers in-process through the same call.

mod api;
mod auth;
pub mod cli;
mod config;
mod control;
mod db;
mod metrics;
mod rates;
mod run;
mod store;

pub use config::{Config, ConfigError};
pub use run::{Addrs, Server, ServerHandle};
