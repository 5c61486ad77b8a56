//! Host bindings of the four worlds, generated from `plugins/wit`.
//!
//! The `types` and `host` interfaces are generated once (with the auth world) and
//! shared by the other worlds.
#![allow(missing_docs, unreachable_pub, clippy::all)]

pub(crate) mod auth {
    wasmtime::component::bindgen!({
        world: "auth",
        path: "../wit",
    });
}

pub(crate) mod route {
    wasmtime::component::bindgen!({
        world: "route",
        path: "../wit",
        with: {
            "cthulhu:plugin/types": crate::bindings::auth::cthulhu::plugin::types,
            "cthulhu:plugin/host": crate::bindings::auth::cthulhu::plugin::host,
        },
    });
}

pub(crate) mod schedule {
    wasmtime::component::bindgen!({
        world: "schedule",
        path: "../wit",
        with: {
            "cthulhu:plugin/types": crate::bindings::auth::cthulhu::plugin::types,
            "cthulhu:plugin/host": crate::bindings::auth::cthulhu::plugin::host,
        },
    });
}

pub(crate) mod notify {
    wasmtime::component::bindgen!({
        world: "notify",
        path: "../wit",
        with: {
            "cthulhu:plugin/types": crate::bindings::auth::cthulhu::plugin::types,
            "cthulhu:plugin/host": crate::bindings::auth::cthulhu::plugin::host,
        },
    });
}

pub(crate) use auth::cthulhu::plugin::{host, types};
