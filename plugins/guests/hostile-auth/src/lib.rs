//! Hostile test plugin, auth world: see `hostile-common` for the modes.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;

use hostile_common::{Config, Mode};

wit_bindgen::generate!({ world: "auth", path: "../../wit" });

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c = Config::parse(&config)?;
        if c.mode == Mode::PanicConfigure {
            panic!("hostile-auth: configured to panic");
        }
        CONFIG.with(|s| *s.borrow_mut() = c);
        Ok(())
    }

    fn authorize(request: AccessRequest) -> Decision {
        let c = CONFIG.with(|s| s.borrow().clone());
        if c.act(&request.name, cthulhu::plugin::host::now) {
            Decision::Allow
        } else {
            Decision::Deny("hostile-auth denies everything".into())
        }
    }
}

export!(Plugin);
