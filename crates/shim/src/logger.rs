//! The shim's own log: lines written to the `log` fifo in the bundle, which
//! containerd copies into its own log, or to stderr when there is none.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

struct Logger {
    out: Mutex<File>,
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!(
            "time=\"{}\" level={} msg=\"{}\" runtime=io.containerd.barge.v1 pid={}\n",
            humantime(),
            r.level().as_str().to_ascii_lowercase(),
            r.args().to_string().replace('"', "\\\""),
            std::process::id()
        );
        if let Ok(mut out) = self.out.lock() {
            // Never block the shim on a full fifo: a lost line is better.
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

fn humantime() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Logs to the `log` fifo in the current directory when containerd made one.
pub fn init(debug: bool) {
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .ok()
        .filter(|f| {
            use std::os::unix::fs::FileTypeExt;
            f.metadata()
                .map(|m| m.file_type().is_fifo())
                .unwrap_or(false)
        });
    let out = match fifo {
        Some(f) => f,
        None => match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
            Ok(f) => f,
            Err(_) => return,
        },
    };
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    if log::set_boxed_logger(Box::new(Logger {
        out: Mutex::new(out),
        level,
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}
