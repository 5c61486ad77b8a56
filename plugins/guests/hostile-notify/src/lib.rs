//! Hostile test plugin, notify world: see `hostile-common` for the modes. When it
//! behaves it drops every notification.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "notify", path: "../../wit" });

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        hostile_common::configure("hostile-notify", &config)
    }

    fn on_event(event: LifecycleEvent, _defaults: Vec<Notification>) -> Vec<Notification> {
        let c = hostile_common::current();
        c.act(
            event.path.as_deref().unwrap_or(""),
            cthulhu::plugin::host::now,
        );
        Vec::new()
    }
}

export!(Plugin);
