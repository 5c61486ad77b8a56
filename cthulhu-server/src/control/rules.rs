//! The access and routing rules the listeners consult, swapped whole by the control
//! task whenever the desired state changes (a reload, an API call).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use cthulhu_core::{
    AccessRequest, Decision, Route, Router, Secret, StaticRouter, StreamInfo, StreamPath,
};

/// One version of the rules.
#[derive(Debug, Default)]
struct Rules {
    router: StaticRouter,
    passphrases: HashMap<StreamPath, Secret>,
}

/// The current rules: a [`Router`] for RTMP and SRT, and the SRT passphrase of each
/// stream. Cheap to clone; readers never wait for the control task.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedRules {
    current: Arc<RwLock<Arc<Rules>>>,
}

impl SharedRules {
    /// Replaces the rules; connections already accepted are not affected.
    pub(crate) fn set(&self, router: StaticRouter, passphrases: HashMap<StreamPath, Secret>) {
        let next = Arc::new(Rules {
            router,
            passphrases,
        });
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    fn get(&self) -> Arc<Rules> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The SRT passphrase of `path`, if it has one.
    pub(crate) fn passphrase(&self, path: &StreamPath) -> Option<Secret> {
        self.get().passphrases.get(path).cloned()
    }
}

#[async_trait]
impl Router for SharedRules {
    async fn authorize(&self, request: &AccessRequest) -> Decision {
        let rules = self.get();
        rules.router.authorize(request).await
    }

    async fn route(&self, stream: &StreamInfo) -> Vec<Route> {
        let rules = self.get();
        rules.router.route(stream).await
    }
}
