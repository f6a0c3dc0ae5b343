//! The command line containerd gives a shim: Go-style flags with one dash,
//! then the action (`start`, `delete`, or none to serve).

use crate::error::{Error, Result};

/// What the shim is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Print the address of a (new or shared) shim server.
    Start,
    /// Clean up after a shim that died.
    Delete,
    /// Serve the Task API (what `start` turns into).
    Serve,
    /// Print the version.
    Version,
    /// Print a protobuf RuntimeInfo for the options on stdin.
    Info,
}

#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address.
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<(Flags, Action)> {
    let mut flags = Flags::default();
    let mut action = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if action.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "unexpected argument `{arg}`"
                )));
            }
            action = Some(match arg.as_str() {
                "start" => Action::Start,
                "delete" => Action::Delete,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown action `{other}`: expected start or delete"
                    )))
                }
            });
            continue;
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        let mut value = |n: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| Error::InvalidArgument(format!("flag -{n} needs a value"))),
            }
        };
        match name {
            "namespace" => flags.namespace = value(name)?,
            "id" => flags.id = value(name)?,
            "address" => flags.address = value(name)?,
            "publish-binary" => flags.publish_binary = value(name)?,
            "bundle" => flags.bundle = value(name)?,
            "socket" => flags.socket = value(name)?,
            "debug" => flags.debug = inline.as_deref().map(|v| v != "false").unwrap_or(true),
            "v" | "version" => return Ok((flags, Action::Version)),
            "info" => return Ok((flags, Action::Info)),
            other => return Err(Error::InvalidArgument(format!("unknown flag -{other}"))),
        }
    }
    Ok((flags, action.unwrap_or(Action::Serve)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn containerd_start_line() {
        let (f, a) = parse(&args(
            "-namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id abc -debug start",
        ))
        .unwrap();
        assert_eq!(a, Action::Start);
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.id, "abc");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert!(f.debug);
    }

    #[test]
    fn delete_with_bundle_and_serve_default() {
        let (f, a) = parse(&args("-namespace n -id x -bundle /b delete")).unwrap();
        assert_eq!((a, f.bundle.as_str()), (Action::Delete, "/b"));
        let (_, a) = parse(&args("-namespace=n -id=x")).unwrap();
        assert_eq!(a, Action::Serve);
        assert_eq!(parse(&args("-v")).unwrap().1, Action::Version);
        assert_eq!(parse(&args("-info")).unwrap().1, Action::Info);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse(&args("-bogus 1"))
            .unwrap_err()
            .to_string()
            .contains("-bogus"));
        assert!(parse(&args("-id"))
            .unwrap_err()
            .to_string()
            .contains("-id needs a value"));
        assert!(parse(&args("frobnicate"))
            .unwrap_err()
            .to_string()
            .contains("frobnicate"));
    }
}
