//! Hostile test plugin, route world: see `hostile-common` for the modes. When it
//! behaves it replaces the routes with one destination named `hostile`.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "route", path: "../../wit" });

use cthulhu::plugin::types::{Destination, RouteMode};

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        hostile_common::configure("hostile-route", &config)
    }

    fn route(info: StreamInfo) -> Routes {
        let c = hostile_common::current();
        c.act(&info.name, cthulhu::plugin::host::now);
        Routes {
            mode: RouteMode::Replace,
            destinations: vec![Destination {
                name: "hostile".into(),
                url: format!("rtmp://127.0.0.1/hostile/{}", info.name),
            }],
            recordings: Vec::new(),
        }
    }
}

export!(Plugin);
