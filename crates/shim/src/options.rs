//! Decoding the runtime options that arrive with Create.

use barge_executor::Options;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::error::{Error, Result};

/// The type containerd uses for every runtime but runc.
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// The fields of `runtimeoptions.v1.Options`.
#[derive(Debug, Default, PartialEq, Eq)]
struct RuntimeOptions {
    type_url: String,
    config_path: String,
    config_body: String,
}

/// Reads barge's options from Create's `options`; none gives the defaults.
pub fn decode(any: Option<&Any>) -> Result<Options> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(Options::default());
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS {
        return Err(Error::InvalidArgument(format!(
            "barge takes runtime options of type {RUNTIME_OPTIONS} (TOML in config_body or config_path), not {}",
            any.type_url
        )));
    }
    let ro = parse_runtime_options(&any.value)?;
    let body = if !ro.config_body.is_empty() {
        ro.config_body
    } else if !ro.config_path.is_empty() {
        std::fs::read_to_string(&ro.config_path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read barge runtime config {}: {e}",
                ro.config_path
            ))
        })?
    } else {
        String::new()
    };
    Ok(Options::from_toml(&body)?)
}

/// A minimal protobuf reader for three string fields.
fn parse_runtime_options(mut buf: &[u8]) -> Result<RuntimeOptions> {
    let bad = || Error::InvalidArgument(format!("malformed {RUNTIME_OPTIONS}"));
    let mut out = RuntimeOptions::default();
    while !buf.is_empty() {
        let (key, rest) = varint(buf).ok_or_else(bad)?;
        buf = rest;
        match key & 7 {
            0 => buf = varint(buf).ok_or_else(bad)?.1,
            1 => buf = buf.get(8..).ok_or_else(bad)?,
            5 => buf = buf.get(4..).ok_or_else(bad)?,
            2 => {
                let (len, rest) = varint(buf).ok_or_else(bad)?;
                let len = usize::try_from(len).map_err(|_| bad())?;
                let value = rest.get(..len).ok_or_else(bad)?;
                buf = &rest[len..];
                let text = || String::from_utf8(value.to_vec()).map_err(|_| bad());
                match key >> 3 {
                    1 => out.type_url = text()?,
                    2 => out.config_path = text()?,
                    3 => out.config_body = text()?,
                    _ => {}
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
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
        wrong.type_url = "containerd.runc.v1.Options".into();
        wrong.value = vec![1];
        let err = decode(Some(&wrong)).unwrap_err().to_string();
        assert!(err.contains("containerd.runc.v1.Options"), "{err}");
        let err = decode(Some(&any(vec![0x1a, 0x10, b'x'])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed"), "{err}");
    }
}
