//! Decoding the runtime options that arrive with Create (and on `start`'s
//! stdin). Three messages are understood:
//!
//! - `runtimeoptions.v1.Options`, what containerd gives every runtime but
//!   runc: barge's TOML, in `config_body` or in the file `config_path`;
//! - `containerd.runc.v1.Options`, what runc-v2 takes, and what
//!   containerd's Go client sends to any runtime for some of its options
//!   (ctr 2.x's `--no-pivot` and `--uidmap`, `WithUIDOwner`, `WithShimCgroup`);
//! - `containerd.linux.runc.CreateOptions`, what the Go client of
//!   containerd 1.x sends instead to a runtime that is not runc (ctr 1.x's
//!   `--no-pivot` and `--uidmap`).
//!
//! The runc messages are mapped onto barge's options field by field
//! ([`crate::runc_options`]).

use barge_executor::Options;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::error::{Error, Result};
use crate::runc_options;
use crate::wire::fields;

/// The type containerd uses for every runtime but runc.
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// Whether `type_url` names one of the messages [`decode`] reads.
pub fn is_options_type(type_url: &str) -> bool {
    let name = message_name(type_url);
    name == RUNTIME_OPTIONS || runc_options::Message::named(name).is_some()
}

fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or_default()
}

/// Reads barge's options from Create's `options`; none gives the defaults.
pub fn decode(any: Option<&Any>) -> Result<Options> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(Options::default());
    };
    let name = message_name(&any.type_url);
    if let Some(message) = runc_options::Message::named(name) {
        return message.decode(&any.value);
    }
    if name != RUNTIME_OPTIONS {
        return Err(Error::InvalidArgument(format!(
            "barge takes runtime options of type {RUNTIME_OPTIONS} (TOML in config_body or config_path), {} or {}, not {}",
            runc_options::Message::RuncV1.name(),
            runc_options::Message::LinuxCreate.name(),
            any.type_url
        )));
    }
    let mut body = String::new();
    let mut path = String::new();
    for (number, value) in fields(&any.value, RUNTIME_OPTIONS)? {
        let text = || value.text(RUNTIME_OPTIONS);
        match number {
            2 => path = text()?,
            3 => body = text()?,
            _ => {}
        }
    }
    if body.is_empty() && !path.is_empty() {
        body = read_config(&path)?;
    }
    Ok(Options::from_toml(&body)?)
}

/// The most a runtime config file may hold.
const MAX_CONFIG: u64 = 1 << 20;

/// Reads the file `config_path` names: a regular file of at most
/// [`MAX_CONFIG`] bytes. A fifo (which would block the shim's one thread
/// until a writer came) or a device (`/dev/zero`, which never ends) is
/// refused.
fn read_config(path: &str) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| {
        Error::InvalidArgument(format!("cannot read barge runtime config {path}: {e}"))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(Error::InvalidArgument(format!(
            "barge runtime config {path} is not a regular file"
        )));
    }
    let mut body = String::new();
    file.take(MAX_CONFIG + 1)
        .read_to_string(&mut body)
        .map_err(cannot)?;
    if body.len() as u64 > MAX_CONFIG {
        return Err(Error::InvalidArgument(format!(
            "barge runtime config {path} is larger than {} KiB",
            MAX_CONFIG >> 10
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use barge_executor::ExecutorChoice;

    fn field(n: u8, s: &str) -> Vec<u8> {
        let mut v = vec![(n << 3) | 2, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn any(value: Vec<u8>) -> Any {
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn body_and_path() {
        let o = decode(Some(&any(field(
            3,
            "executor = \"oci-binary\"\nruntime = \"crun\"",
        ))))
        .unwrap();
        assert_eq!(
            (o.executor, o.runtime.as_str()),
            (ExecutorChoice::OciBinary, "crun")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("barge.toml");
        std::fs::write(&p, "executor = \"native\"").unwrap();
        let o = decode(Some(&any(field(2, p.to_str().unwrap())))).unwrap();
        assert_eq!(o.executor, ExecutorChoice::Native);
        assert_eq!(decode(None).unwrap(), Options::default());
    }

    #[test]
    fn errors_name_the_problem() {
        let err = decode(Some(&any(field(3, "nope = 1"))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `nope`"), "{err}");
        let err = decode(Some(&any(field(2, "/no/such.toml"))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such.toml"), "{err}");
        let mut wrong = any(vec![]);
        wrong.type_url = "containerd.runc.v1.CheckpointOptions".into();
        wrong.value = vec![8, 1];
        let err = decode(Some(&wrong)).unwrap_err().to_string();
        assert!(
            err.contains("containerd.runc.v1.CheckpointOptions"),
            "{err}"
        );
        let err = decode(Some(&any(vec![0x1a, 0x10, b'x'])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed"), "{err}");
    }

    /// Found by the `options` fuzz target: a `config_path` naming a fifo
    /// hung the shim in open(2), and one naming /dev/zero grew its heap
    /// without end.
    #[test]
    fn config_path_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, format!("# {}\n", "x".repeat(1 << 20))).unwrap();
        let paths = [fifo, "/dev/zero".into(), dir.path().to_path_buf(), big];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for p in paths {
                let err = decode(Some(&any(field(2, p.to_str().unwrap()))))
                    .unwrap_err()
                    .to_string();
                tx.send((p, err)).unwrap();
            }
        });
        for want in [
            "not a regular file",
            "not a regular file",
            "not a regular file",
            "larger than 1024 KiB",
        ] {
            let (p, err) = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("decode returns");
            assert!(
                err.contains(want) && err.contains(p.to_str().unwrap()),
                "{err}"
            );
        }
    }

    #[test]
    fn option_types_are_known_with_or_without_a_prefix() {
        for url in [
            "runtimeoptions.v1.Options",
            "containerd.runc.v1.Options",
            "type.googleapis.com/containerd.runc.v1.Options",
            "containerd.linux.runc.CreateOptions",
        ] {
            assert!(is_options_type(url), "{url}");
        }
        assert!(!is_options_type("containerd.io/cri.v1.PodSandboxConfig"));
    }
}
