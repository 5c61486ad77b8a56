//! Hostile test plugin, auth world: see `hostile-common` for the modes.
// wit-bindgen's generated glue takes one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "auth", path: "../../wit" });

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        hostile_common::configure("hostile-auth", &config)
    }

    fn authorize(request: AccessRequest) -> Decision {
        let c = hostile_common::current();
        if c.act(&request.name, cthulhu::plugin::host::now) {
            Decision::Allow
        } else {
            Decision::Deny("hostile-auth denies everything".into())
        }
    }
}

export!(Plugin);
