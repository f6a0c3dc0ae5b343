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

/// The current time as RFC 3339 in UTC, the form containerd's own log uses.
fn humantime() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
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

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(951_782_400, 5),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            super::rfc3339(1_795_869_913, 0),
            "2026-11-28T12:45:13.000000000Z"
        );
    }
}
