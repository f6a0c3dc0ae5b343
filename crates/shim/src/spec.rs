//! Reading the bundle's `config.json`.

use std::collections::HashMap;
use std::path::Path;

use barge_executor::Spec;
use oci_spec::runtime::LinuxNamespaceType;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Annotations that put containers into one shim, in order of precedence.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The id of the shim group a bundle belongs to: the first grouping
/// annotation present, otherwise the container's own id.
pub fn group_id(bundle: &Path, id: &str) -> String {
    #[derive(Deserialize)]
    struct Annotations {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let Ok(bytes) = std::fs::read(bundle.join("config.json")) else {
        return id.to_string();
    };
    let Ok(parsed) = serde_json::from_slice::<Annotations>(&bytes) else {
        return id.to_string();
    };
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| {
            parsed
                .annotations
                .get(*k)
                .filter(|v| !v.is_empty())
                .cloned()
        })
        .unwrap_or_else(|| id.to_string())
}

/// Loads and checks `config.json`, with errors that name the file.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::InvalidArgument(format!("cannot read OCI spec {}: {e}", path.display()))
    })?;
    let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidArgument(format!("malformed OCI spec {}: {e}", path.display()))
    })?;
    if spec.process().is_none() {
        return Err(Error::InvalidArgument(format!(
            "OCI spec {} has no `process`",
            path.display()
        )));
    }
    Ok(spec)
}

/// Whether the container has a PID namespace of its own. Without one, its
/// processes are not killed by the kernel when its init exits.
pub fn has_own_pid_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
        .unwrap_or(false)
}

/// Checks a container id before it is used as a file name.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid container id {id:?}: use 1 to 76 of [A-Za-z0-9_.-], not starting with a dot"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_follows_annotations() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(group_id(dir.path(), "c"), "c");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.containerd.runc.v2.group":"grp"}}"#,
        )
        .unwrap();
        assert_eq!(group_id(dir.path(), "c"), "grp");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}"#,
        )
        .unwrap();
        assert_eq!(group_id(dir.path(), "c"), "pod");
    }

    #[test]
    fn malformed_spec_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("malformed OCI spec"), "{err}");
    }

    #[test]
    fn ids() {
        assert!(check_id("abc-1_2.3").is_ok());
        for bad in ["", "a/b", "..", ".x", "a b", &"x".repeat(77)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
