//! Hostile test plugin, notify world: see `hostile-common` for the modes. When it
//! behaves it drops every notification.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;

use hostile_common::{Config, Mode};

wit_bindgen::generate!({ world: "notify", path: "../../wit" });

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let c = Config::parse(&config)?;
        if c.mode == Mode::PanicConfigure {
            panic!("hostile-notify: configured to panic");
        }
        CONFIG.with(|s| *s.borrow_mut() = c);
        Ok(())
    }

    fn on_event(event: LifecycleEvent, _defaults: Vec<Notification>) -> Vec<Notification> {
        let c = CONFIG.with(|s| s.borrow().clone());
        c.act(
            event.path.as_deref().unwrap_or(""),
            cthulhu::plugin::host::now,
        );
        Vec::new()
    }
}

export!(Plugin);
