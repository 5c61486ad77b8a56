//! A second thread with its own single-threaded tokio runtime for the tasks whose
//! timing is the measurement (publisher, probes, relay destinations): thousands of
//! ready player tasks on the main runtime would otherwise delay their reads and
//! inflate the latencies they record.

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The timing thread; its tasks are cancelled when it is dropped.
#[derive(Debug)]
#[must_use = "the runtime stops when this is dropped"]
pub struct TimingThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TimingThread {
    /// Starts the thread.
    pub fn start() -> io::Result<Self> {
        let rt = Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("loadgen-timing".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = rx.await;
                });
            })?;
        Ok(Self {
            handle,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Where to spawn timing-sensitive tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for TimingThread {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
