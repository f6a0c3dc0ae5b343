//! What the figures were measured on.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub cgroups: String,
    pub containerd: String,
    pub runc: String,
    pub shim: String,
    pub shim_version: String,
    pub date: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn probe(containerd_bin: &Path, shim: &Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default();
        let cgroups = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2 (unified)"
        } else if Path::new("/sys/fs/cgroup/unified").exists() {
            "v1 (hybrid)"
        } else {
            "v1"
        };
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu,
            mem_total_mib: mem_kib / 1024,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            cgroups: cgroups.to_string(),
            containerd: first_line(containerd_bin, &["--version"]),
            runc: first_line(Path::new("runc"), &["--version"]),
            shim: shim.display().to_string(),
            shim_version: all_lines(shim, &["-v"]),
            date: first_line(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "nproc": self.nproc,
            "cpu": self.cpu,
            "mem_total_mib": self.mem_total_mib,
            "kernel": self.kernel,
            "cgroups": self.cgroups,
            "containerd": self.containerd,
            "runc": self.runc,
            "shim": self.shim,
            "shim_version": self.shim_version,
            "date": self.date,
            "loadavg_start": self.loadavg_start,
            "loadavg_end": self.loadavg_end,
        })
    }

    /// `(name, value)` pairs for the text and Markdown reports.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("date", self.date.clone()),
            ("nproc", self.nproc.to_string()),
            ("cpu", self.cpu.clone()),
            (
                "memory",
                format!("{:.1} GiB", self.mem_total_mib as f64 / 1024.0),
            ),
            ("kernel", self.kernel.clone()),
            ("cgroups", self.cgroups.clone()),
            ("containerd", self.containerd.clone()),
            ("runc", self.runc.clone()),
            ("shim", format!("{} ({})", self.shim, self.shim_version)),
            (
                "load average (1/5/15 min)",
                format!(
                    "{} at start, {} at end",
                    self.loadavg_start, self.loadavg_end
                ),
            ),
        ]
    }
}

pub fn loadavg() -> String {
    let text = read_trim("/proc/loadavg");
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The first line a command prints.
fn first_line(program: &Path, args: &[&str]) -> String {
    output(program, args)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Everything a command prints, on one line.
fn all_lines(program: &Path, args: &[&str]) -> String {
    output(program, args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn output(program: &Path, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if !out.stdout.trim_ascii().is_empty() => {
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}
