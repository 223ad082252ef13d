//! Logging: one process-wide sink that the host (the C API's log callback, or the CLI's
//! stderr) installs. The engine logs rarely: backend choice, fallbacks, load times.

use parking_lot::RwLock;

/// Log levels, numbered as in the C API (`WV_LOG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<(Level, Sink)>> = RwLock::new(None);

/// Install `sink` for messages at `max_level` or more severe; `None` silences the engine.
pub fn set_sink(sink: Option<(Level, Sink)>) {
    *SINK.write() = sink;
}

/// Send a message to the sink, if one is installed and wants this level.
pub fn log(level: Level, msg: &str) {
    if let Some((max, sink)) = &*SINK.read() {
        if level <= *max {
            sink(level, msg);
        }
    }
}
