//! Hostile test plugin, route world: see `hostile-common` for the modes. When it
//! behaves it replaces the routes with one destination named `hostile`.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;

use hostile_common::{Config, Mode};

wit_bindgen::generate!({ world: "route", path: "../../wit" });

use cthulhu::plugin::types::{Destination, RouteMode};

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c = Config::parse(&config)?;
        if c.mode == Mode::PanicConfigure {
            panic!("hostile-route: configured to panic");
        }
        CONFIG.with(|s| *s.borrow_mut() = c);
        Ok(())
    }

    fn route(info: StreamInfo) -> Routes {
        let c = CONFIG.with(|s| s.borrow().clone());
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
