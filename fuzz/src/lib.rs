//! Helpers shared by the fuzz targets.
//!
//! libfuzzer-sys installs a panic hook that aborts the process, so that a panic is
//! reported as a crash even where the code under test would catch it. The server
//! and the push client do catch panics of rml_rtmp (`catch_unwind`; the connection
//! is closed): such a panic is not a finding. [`contained`] runs a call into a
//! dependency the way they do, and only there a panic unwinds into `catch_unwind`
//! instead of aborting. A panic anywhere else still aborts and is a crash.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, Once, OnceLock};

use rml_amf0::Amf0Value;

thread_local! {
    /// Depth of [`contained`] calls on this thread.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

/// Runs `f` (a call into rml_rtmp or rml_amf0 with untrusted input) under
/// `catch_unwind`, as cthulhu-rtmp's `guarded` does. Returns None if it panicked.
pub fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    HOOK.call_once(|| {
        let abort = panic::take_hook();
        // To list the contained panics a corpus reaches: run the target on it with
        // this set (`-runs=0`).
        let show = std::env::var_os("CTHULHU_FUZZ_SHOW_CONTAINED").is_some();
        panic::set_hook(Box::new(move |info| {
            if CONTAINED.with(Cell::get) == 0 {
                abort(info);
            } else if show {
                eprintln!("contained panic: {info}");
            }
        }));
    });
    CONTAINED.with(|c| c.set(c.get() + 1));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get() - 1));
    r.ok()
}

/// Nesting of objects and strict arrays in a decoded value (a top-level object is 1).
pub fn depth(v: &Amf0Value) -> usize {
    // Iterative: the values come from a decoder bounded by the scan, but this
    // helper must not be the thing that overflows.
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Amf0Value::Object(p) => {
                deepest = deepest.max(d + 1);
                stack.extend(p.values().map(|c| (c, d + 1)));
            }
            Amf0Value::StrictArray(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Read sizes picked from a seed: how a TCP peer's bytes arrive in `read()`s of a
/// buffer of at most `max` bytes. Seed 0 fills every read.
pub struct Reads {
    state: u64,
    fill: bool,
}

impl Reads {
    pub fn new(seed: u8) -> Self {
        Self {
            state: u64::from(seed),
            fill: seed == 0,
        }
    }

    /// The size of the next read, 1..=max.
    pub fn next(&mut self, max: usize) -> usize {
        if self.fill {
            return max.max(1);
        }
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Mostly full or large reads, sometimes tiny ones (split headers).
        let max = max.max(1) as u64;
        let n = match z % 4 {
            0 => 1 + (z >> 8) % 16.min(max),
            1 => 1 + (z >> 8) % max,
            _ => max,
        };
        n as usize
    }
}

/// Stack of the thread [`on_task_stack`] runs targets on: a Tokio worker's default,
/// where the server's and the push client's connection tasks run.
pub const TASK_STACK: usize = 2 * 1024 * 1024;

type Worker = (SyncSender<Vec<u8>>, Receiver<()>);

/// Runs `f(data)` on a long-lived thread with a [`TASK_STACK`] stack and waits for
/// it (libFuzzer's own thread has 8 MiB or more, which would hide recursion the
/// server cannot afford). A panic there aborts the process like one here; a stack
/// overflow is a crash either way. One `f` per process: the first one given.
pub fn on_task_stack(data: &[u8], f: fn(&[u8])) {
    static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (input_tx, input_rx) = sync_channel::<Vec<u8>>(0);
        let (done_tx, done_rx) = sync_channel(0);
        std::thread::Builder::new()
            .name("task".into())
            .stack_size(TASK_STACK)
            .spawn(move || {
                for data in input_rx {
                    f(&data);
                    if done_tx.send(()).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the task thread");
        Mutex::new((input_tx, done_rx))
    });
    let worker = worker.lock().unwrap_or_else(|e| e.into_inner());
    worker.0.send(data.to_vec()).expect("task thread alive");
    worker.1.recv().expect("task thread alive");
}
