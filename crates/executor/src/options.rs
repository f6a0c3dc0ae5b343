//! Runtime options: the TOML that containerd passes in
//! `runtimeoptions.v1.Options` (from a CRI runtime's `options`, from
//! `ctr run --runtime-config-path`, or from Docker's daemon.json
//! `runtimes.<name>.options`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which executor runs a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorChoice {
    /// Pick by looking at the entrypoint.
    #[default]
    Auto,
    /// In-process libcontainer.
    Native,
    /// An OCI runtime binary (runc, crun, youki) driven by its command line.
    OciBinary,
    /// wasmtime, inside the container's namespaces and cgroup.
    Wasm,
}

/// Every option barge understands. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// `auto`, `native`, `oci-binary` or `wasm`.
    pub executor: ExecutorChoice,
    /// The OCI runtime binary for the `oci-binary` executor: a name looked
    /// up on PATH, or an absolute path.
    pub runtime: String,
    /// The state directory handed to the runtime binary as `--root`.
    /// Defaults to `/run/containerd/barge/<runtime>`.
    pub runtime_root: Option<PathBuf>,
    /// Manage cgroups through systemd rather than cgroupfs.
    pub systemd_cgroup: bool,
    /// Make the container's root with `MS_MOVE` and `chroot` instead of
    /// `pivot_root` (for a rootfs on a ramdisk, where pivot_root fails).
    pub no_pivot_root: bool,
    /// Leave the container in the shim's session keyring instead of a new
    /// one of its own (only the `oci-binary` runtime makes one; libcontainer
    /// never does).
    pub no_new_keyring: bool,
    /// The cgroup the shim process moves itself into when it starts, as a
    /// path under each mounted hierarchy (`/barge/shims`). It must exist.
    pub shim_cgroup: Option<String>,
    /// The owner (host uid) of the stdio pipes and fifos a process gets, so
    /// that a process in a user namespace can reopen them (`/dev/stdout`).
    pub io_uid: u32,
    /// The group (host gid) of the stdio pipes and fifos a process gets.
    pub io_gid: u32,
    /// Log at debug level, as containerd's `-debug` does.
    pub debug: bool,
    /// The Wasm executor's sandbox and cache; annotations on a container
    /// override the sandbox settings.
    pub wasm: WasmOptions,
}

/// The `[wasm]` table of the runtime options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmOptions {
    /// Directories the guest may open, as `PATH`, `PATH:ro` or `PATH:rw`
    /// inside the container. `None` preopens the container's whole rootfs
    /// read-write; an empty list preopens nothing.
    pub preopens: Option<Vec<String>>,
    /// Fuel the guest may burn (about one unit per Wasm instruction);
    /// 0 is unlimited.
    pub fuel: u64,
    /// Wall-clock limit on the guest, in milliseconds; 0 is unlimited.
    pub timeout_ms: u64,
    /// Where compiled modules are kept between starts.
    pub cache_dir: PathBuf,
    /// The cache's size bound, in MiB; the least recently used entries go
    /// first. 0 turns the cache off.
    pub cache_max_mb: u64,
}

/// The default place of the compiled-module cache.
pub const DEFAULT_WASM_CACHE_DIR: &str = "/var/lib/barge/wasm-cache";

impl Default for WasmOptions {
    fn default() -> Self {
        WasmOptions {
            preopens: None,
            fuel: 0,
            timeout_ms: 0,
            cache_dir: PathBuf::from(DEFAULT_WASM_CACHE_DIR),
            cache_max_mb: 1024,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            executor: ExecutorChoice::Auto,
            runtime: "runc".to_string(),
            runtime_root: None,
            systemd_cgroup: false,
            no_pivot_root: false,
            no_new_keyring: false,
            shim_cgroup: None,
            io_uid: 0,
            io_gid: 0,
            debug: false,
            wasm: WasmOptions::default(),
        }
    }
}

impl Options {
    /// Parses the TOML body of a `runtimeoptions.v1.Options`.
    pub fn from_toml(body: &str) -> Result<Options> {
        let options: Options = toml::from_str(body)
            .map_err(|e| Error::InvalidArgument(format!("barge runtime options: {e}")))?;
        options.validate()?;
        Ok(options)
    }

    /// The owner the process's stdio must be given, when it is not root's.
    pub fn io_owner(&self) -> Option<(u32, u32)> {
        (self.io_uid != 0 || self.io_gid != 0).then_some((self.io_uid, self.io_gid))
    }

    /// Serialises the options, to keep them beside the bundle for `delete`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks values that TOML's types cannot: `runtime` names a binary,
    /// paths are absolute.
    pub fn validate(&self) -> Result<()> {
        if self.runtime.is_empty() {
            return Err(Error::InvalidArgument(
                "barge runtime options: `runtime` must name an OCI runtime binary".into(),
            ));
        }
        if let Some(root) = &self.runtime_root {
            if !root.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "barge runtime options: `runtime_root` must be an absolute path, got {}",
                    root.display()
                )));
            }
        }
        if let Some(cgroup) = &self.shim_cgroup {
            let path = std::path::Path::new(cgroup);
            let parent = path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            if !path.is_absolute() || parent {
                return Err(Error::InvalidArgument(format!(
                    "barge runtime options: `shim_cgroup` must be an absolute cgroup path without `..`, got {cgroup:?}"
                )));
            }
        }
        if !self.wasm.cache_dir.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "barge runtime options: `wasm.cache_dir` must be an absolute path, got {}",
                self.wasm.cache_dir.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_gives_defaults() {
        assert_eq!(Options::from_toml("").unwrap(), Options::default());
    }

    #[test]
    fn every_key_parses() {
        let o = Options::from_toml(
            "executor = \"oci-binary\"\nruntime = \"crun\"\nruntime_root = \"/run/x\"\nsystemd_cgroup = false\ndebug = true\n",
        )
        .unwrap();
        assert_eq!(o.executor, ExecutorChoice::OciBinary);
        assert_eq!(o.runtime, "crun");
        assert_eq!(o.runtime_root, Some(PathBuf::from("/run/x")));
        assert!(o.debug);
        assert_eq!(Options::from_toml(&o.to_toml()).unwrap(), o);
        let o = Options::from_toml(
            "no_pivot_root = true\nno_new_keyring = true\nshim_cgroup = \"/barge/shims\"\nio_uid = 100000\nio_gid = 100001\n",
        )
        .unwrap();
        assert!(o.no_pivot_root && o.no_new_keyring);
        assert_eq!(o.shim_cgroup.as_deref(), Some("/barge/shims"));
        assert_eq!(o.io_owner(), Some((100000, 100001)));
        assert_eq!(Options::default().io_owner(), None);
        assert_eq!(Options::from_toml(&o.to_toml()).unwrap(), o);
        let o = Options::from_toml(
            "executor = \"wasm\"\n[wasm]\npreopens = [\"/data:ro\"]\nfuel = 10\ntimeout_ms = 500\ncache_dir = \"/tmp/c\"\ncache_max_mb = 5\n",
        )
        .unwrap();
        assert_eq!(o.executor, ExecutorChoice::Wasm);
        assert_eq!(o.wasm.preopens, Some(vec!["/data:ro".to_string()]));
        assert_eq!(
            (o.wasm.fuel, o.wasm.timeout_ms, o.wasm.cache_max_mb),
            (10, 500, 5)
        );
        assert_eq!(Options::from_toml(&o.to_toml()).unwrap(), o);
    }

    #[test]
    fn the_example_parses() {
        let o = Options::from_toml(include_str!("../../../examples/runtime-options/barge.toml"))
            .unwrap();
        assert_eq!(
            (o.executor, o.runtime.as_str()),
            (ExecutorChoice::OciBinary, "runc")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Options::from_toml("runtim = \"crun\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `runtim`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = Options::from_toml("executor = \"gvisor\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gvisor"), "{err}");
        let err = Options::from_toml("runtime_root = \"rel\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = Options::from_toml("runtime = \"\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime"), "{err}");
        for bad in ["shim", "/a/../b"] {
            let err = Options::from_toml(&format!("shim_cgroup = {bad:?}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("shim_cgroup"), "{err}");
        }
        let err = Options::from_toml("[wasm]\ncache_dir = \"c\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wasm.cache_dir"), "{err}");
        let err = Options::from_toml("[wasm]\nfule = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `fule`"), "{err}");
    }
}
