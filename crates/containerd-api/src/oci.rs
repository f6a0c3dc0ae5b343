//! OCI (and Docker v2) image indexes and manifests: what kind a blob is,
//! which manifest of an index to follow, and digest checks.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `os` values of a Wasm platform.
pub const WASM_OS: &[&str] = &["wasi", "wasip1", "wasip2"];
/// The `architecture` values of a Wasm platform.
pub const WASM_ARCH: &[&str] = &["wasm", "wasm32"];

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// What a blob is, by its media type or, when that says nothing, by its
/// content.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Tells an index from a manifest. `Err` carries why neither fits.
pub fn kind(media_type: &str, bytes: &[u8]) -> Result<Kind, String> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => return Ok(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => return Ok(Kind::Manifest),
        _ => {}
    }
    // An unknown or missing media type: look at the JSON itself (the
    // `mediaType` field is optional in OCI).
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("mediaType").and_then(|v| v.as_str()) {
        Some(OCI_INDEX | DOCKER_LIST) => return Ok(Kind::Index),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => return Ok(Kind::Manifest),
        _ => {}
    }
    if value.get("manifests").is_some_and(|m| m.is_array()) {
        Ok(Kind::Index)
    } else if value.get("layers").is_some_and(|l| l.is_array()) {
        Ok(Kind::Manifest)
    } else {
        Err("neither an image index nor an image manifest".into())
    }
}

pub fn is_wasm_platform(p: &Platform) -> bool {
    WASM_OS.contains(&p.os.as_str()) && WASM_ARCH.contains(&p.architecture.as_str())
}

/// The host's architecture as OCI (Go) names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// BuildKit's attestation manifests carry platform `unknown/unknown` and
/// this annotation; they are never the image to run.
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
}

/// The manifest of an index to follow: one for a Wasm platform; else the
/// only one; else one for the host's platform (what containerd pulled);
/// else the first that is not an attestation.
pub fn pick(manifests: &[Descriptor]) -> Option<&Descriptor> {
    if let Some(d) = manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(is_wasm_platform))
    {
        return Some(d);
    }
    if manifests.len() == 1 {
        return manifests.first();
    }
    let arch = host_arch();
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| manifests.iter().find(|d| !is_attestation(d)))
}

/// Checks `bytes` against `digest` (`sha256:<hex>` or `sha512:<hex>`).
/// `Err` carries the digest the bytes have, or why `digest` can't be
/// checked.
pub fn verify(digest: &str, bytes: &[u8]) -> Result<(), VerifyError> {
    let (algorithm, hex) = digest.split_once(':').ok_or(VerifyError::Unsupported)?;
    let actual = match algorithm {
        "sha256" => to_hex(&Sha256::digest(bytes)),
        "sha512" => to_hex(&Sha512::digest(bytes)),
        _ => return Err(VerifyError::Unsupported),
    };
    if actual.len() != hex.len() {
        return Err(VerifyError::Unsupported);
    }
    if actual == hex {
        Ok(())
    } else {
        Err(VerifyError::Mismatch(format!("{algorithm}:{actual}")))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a sha256 or sha512 digest of the right length.
    Unsupported,
    /// The bytes have this digest.
    Mismatch(String),
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
            }),
            annotations: HashMap::new(),
        }
    }

    #[test]
    fn picks_a_wasm_platform_first() {
        let list = [
            desc("linux", host_arch(), "a"),
            desc("wasip2", "wasm32", "b"),
            desc("wasip1", "wasm", "c"),
        ];
        assert_eq!(pick(&list).unwrap().digest, "b");
        for (os, arch) in [("wasi", "wasm"), ("wasip1", "wasm32"), ("wasip2", "wasm")] {
            let list = [desc("linux", host_arch(), "a"), desc(os, arch, "w")];
            assert_eq!(pick(&list).unwrap().digest, "w", "{os}/{arch}");
        }
    }

    #[test]
    fn falls_back_to_the_only_then_host_then_first() {
        assert_eq!(pick(&[desc("linux", "s390x", "x")]).unwrap().digest, "x");
        let list = [
            desc("linux", "s390x-not-host", "a"),
            desc("linux", host_arch(), "b"),
        ];
        assert_eq!(pick(&list).unwrap().digest, "b");
        let mut att = desc("unknown", "unknown", "att");
        att.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        let list = [att, desc("plan9", "mips", "m")];
        assert_eq!(pick(&list).unwrap().digest, "m");
        assert!(pick(&[]).is_none());
    }

    #[test]
    fn kind_by_media_type_or_content() {
        assert_eq!(kind(OCI_INDEX, b""), Ok(Kind::Index));
        assert_eq!(kind(DOCKER_LIST, b""), Ok(Kind::Index));
        assert_eq!(kind(OCI_MANIFEST, b""), Ok(Kind::Manifest));
        assert_eq!(kind(DOCKER_MANIFEST, b""), Ok(Kind::Manifest));
        assert_eq!(kind("", br#"{"manifests":[]}"#), Ok(Kind::Index));
        assert_eq!(kind("", br#"{"layers":[]}"#), Ok(Kind::Manifest));
        assert_eq!(
            kind("x", format!(r#"{{"mediaType":"{OCI_INDEX}"}}"#).as_bytes()),
            Ok(Kind::Index)
        );
        assert!(kind("", br#"{"fsLayers":[]}"#).is_err());
        assert!(kind("", b"\0asm").is_err());
    }

    #[test]
    fn verifies_sha256_and_sha512() {
        let d256 = "sha256:93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476";
        assert_eq!(verify(d256, b"\0asm\x01\0\0\0"), Ok(()));
        assert_eq!(
            verify(d256, b"\0asm\x02\0\0\0"),
            Err(VerifyError::Mismatch(format!(
                "sha256:{}",
                to_hex(&Sha256::digest(b"\0asm\x02\0\0\0"))
            )))
        );
        let d512 = format!("sha512:{}", to_hex(&Sha512::digest(b"x")));
        assert_eq!(verify(&d512, b"x"), Ok(()));
        assert_eq!(verify("md5:abc", b"x"), Err(VerifyError::Unsupported));
        assert_eq!(verify("sha256:abc", b"x"), Err(VerifyError::Unsupported));
        assert_eq!(verify("nocolon", b"x"), Err(VerifyError::Unsupported));
    }
}
