//! What the shim keeps beside a bundle so that `delete` can clean up after
//! the shim died: which executor made the container, with which options,
//! and the pid of its init (for the exit containerd then reports).

use std::path::Path;

use barge_executor::Options;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const FILE: &str = "barge.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub executor: String,
    pub options: Options,
    /// 0 until the init is made.
    #[serde(default)]
    pub pid: u32,
}

pub fn save(bundle: &Path, executor: &str, options: &Options, pid: u32) -> Result<()> {
    let saved = Saved {
        executor: executor.to_string(),
        options: options.clone(),
        pid,
    };
    let bytes = serde_json::to_vec(&saved).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(bundle.join(FILE), bytes)
        .map_err(Error::io(format!("write {}", bundle.join(FILE).display())))
}

pub fn load(bundle: &Path) -> Option<Saved> {
    let bytes = std::fs::read(bundle.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn remove(bundle: &Path) {
    let _ = std::fs::remove_file(bundle.join(FILE));
}
