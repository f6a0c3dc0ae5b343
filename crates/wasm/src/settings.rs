//! What a guest may use: its arguments and environment, the directories it
//! may open, and its limits. Read in the shim from the spec, the runtime
//! options and the container's annotations, so that a bad value fails the
//! create with a message naming it.

use std::time::Duration;

use barge_executor::{Error, Options, Result, Spec};

/// Annotation: the preopened directories, `PATH[:ro|:rw],...`; empty for none.
pub const PREOPENS: &str = "io.barge.wasm.preopens";
/// Annotation: the fuel the guest may burn; 0 is unlimited.
pub const FUEL: &str = "io.barge.wasm.fuel";
/// Annotation: the guest's wall-clock limit, `500ms`, `30s`, `2m` or bare ms.
pub const TIMEOUT: &str = "io.barge.wasm.timeout";
/// Annotation: the port a `wasi:http/proxy` component is served on.
pub const HTTP_PORT: &str = "io.barge.wasm.http-port";
/// Environment variable with the same meaning as [`HTTP_PORT`]; the
/// annotation wins when both are set.
pub const HTTP_PORT_ENV: &str = "BARGE_HTTP_PORT";
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// A directory the guest may open, named as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    /// 0 is unlimited.
    pub fuel: u64,
    pub timeout: Option<Duration>,
    pub http_port: u16,
    /// The limit on each linear memory, from the spec's memory limit.
    pub memory_limit: Option<usize>,
    /// The shim's shared memory limit (`limit::SharedLimit`), which
    /// follows Update; set by the executor after `resolve`.
    pub limit_fd: Option<std::os::fd::RawFd>,
}

impl Settings {
    pub fn resolve(spec: &Spec, options: &Options) -> Result<Settings> {
        let process = spec.process().as_ref();
        let args: Vec<String> = process.and_then(|p| p.args().clone()).unwrap_or_default();
        let env: Vec<(String, String)> = process
            .and_then(|p| p.env().clone())
            .unwrap_or_default()
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.to_string(), String::new()),
            })
            .collect();
        let annotations = spec.annotations().clone().unwrap_or_default();
        let wasm = &options.wasm;

        let preopens = match annotations.get(PREOPENS) {
            Some(list) => parse_preopens(
                list.split(',').map(str::trim).filter(|s| !s.is_empty()),
                PREOPENS,
            )?,
            None => match &wasm.preopens {
                Some(list) => parse_preopens(list.iter().map(String::as_str), "wasm.preopens")?,
                None => vec![Preopen {
                    path: "/".into(),
                    read_only: false,
                }],
            },
        };
        let fuel = match annotations.get(FUEL) {
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                Error::InvalidArgument(format!(
                    "annotation {FUEL}={v:?}: expected a whole number of fuel units"
                ))
            })?,
            None => wasm.fuel,
        };
        let timeout = match annotations.get(TIMEOUT) {
            Some(v) => parse_duration(v).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "annotation {TIMEOUT}={v:?}: expected a duration such as 500ms, 30s or 2m"
                ))
            })?,
            None => Duration::from_millis(wasm.timeout_ms),
        };
        let port_text = annotations
            .get(HTTP_PORT)
            .map(|v| (HTTP_PORT, v.clone()))
            .or_else(|| {
                env.iter()
                    .find(|(k, _)| k == HTTP_PORT_ENV)
                    .map(|(_, v)| (HTTP_PORT_ENV, v.clone()))
            });
        let http_port = match port_text {
            Some((from, v)) => {
                v.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "{from}={v:?}: expected a TCP port, 1 to 65535"
                        ))
                    })?
            }
            None => DEFAULT_HTTP_PORT,
        };
        let memory_limit = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(Settings {
            args,
            env,
            preopens,
            fuel,
            timeout: (!timeout.is_zero()).then_some(timeout),
            http_port,
            memory_limit,
            limit_fd: None,
        })
    }
}

fn parse_preopens<'a>(items: impl Iterator<Item = &'a str>, from: &str) -> Result<Vec<Preopen>> {
    items
        .map(|item| {
            let (path, mode) = match item.rsplit_once(':') {
                Some((p, m)) => (p, Some(m)),
                None => (item, None),
            };
            let read_only = match mode {
                None | Some("rw") => false,
                Some("ro") => true,
                Some(m) => {
                    return Err(Error::InvalidArgument(format!(
                        "{from}: preopen {item:?} has mode {m:?}; use PATH, PATH:ro or PATH:rw"
                    )))
                }
            };
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(Error::InvalidArgument(format!(
                    "{from}: preopen {path:?} must be an absolute path inside the container, without `..`"
                )));
            }
            Ok(Preopen {
                path: path.to_string(),
                read_only,
            })
        })
        .collect()
}

/// `500ms`, `30s`, `2m`, or a bare number of milliseconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "ms"),
    };
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(annotations: &[(&str, &str)], env: &[&str]) -> Spec {
        let mut s = Spec::default();
        let mut p = s.process().clone().unwrap();
        p.set_args(Some(vec!["/app.wasm".into(), "x".into()]));
        p.set_env(Some(env.iter().map(|e| e.to_string()).collect()));
        s.set_process(Some(p));
        s.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ));
        s
    }

    #[test]
    fn defaults_preopen_the_rootfs_read_write() {
        let s = Settings::resolve(&spec(&[], &["A=1", "B"]), &Options::default()).unwrap();
        assert_eq!(
            s.preopens,
            vec![Preopen {
                path: "/".into(),
                read_only: false
            }]
        );
        assert_eq!(s.args, vec!["/app.wasm", "x"]);
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), String::new())]
        );
        assert_eq!((s.fuel, s.timeout, s.http_port), (0, None, 8080));
    }

    #[test]
    fn annotations_override_options() {
        let mut o = Options::default();
        o.wasm.preopens = Some(vec!["/tmp".into()]);
        o.wasm.fuel = 5;
        o.wasm.timeout_ms = 100;
        let s = Settings::resolve(&spec(&[], &[]), &o).unwrap();
        assert_eq!(s.preopens[0].path, "/tmp");
        assert_eq!((s.fuel, s.timeout), (5, Some(Duration::from_millis(100))));
        let s = Settings::resolve(
            &spec(
                &[
                    (PREOPENS, "/data:ro, /out:rw"),
                    (FUEL, "7"),
                    (TIMEOUT, "2s"),
                    (HTTP_PORT, "9000"),
                ],
                &["BARGE_HTTP_PORT=1"],
            ),
            &o,
        )
        .unwrap();
        assert_eq!(
            s.preopens,
            vec![
                Preopen {
                    path: "/data".into(),
                    read_only: true
                },
                Preopen {
                    path: "/out".into(),
                    read_only: false
                }
            ]
        );
        assert_eq!(
            (s.fuel, s.timeout, s.http_port),
            (7, Some(Duration::from_secs(2)), 9000)
        );
        let s = Settings::resolve(&spec(&[(PREOPENS, "")], &["BARGE_HTTP_PORT=81"]), &o).unwrap();
        assert!(s.preopens.is_empty());
        assert_eq!(s.http_port, 81);
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let o = Options::default();
        for (key, value, needle) in [
            (PREOPENS, "data", "absolute"),
            (PREOPENS, "/data:rx", "mode"),
            (PREOPENS, "/a/../b", "absolute"),
            (FUEL, "lots", FUEL),
            (TIMEOUT, "5h", TIMEOUT),
            (HTTP_PORT, "70000", HTTP_PORT),
            (HTTP_PORT, "0", HTTP_PORT),
        ] {
            let err = Settings::resolve(&spec(&[(key, value)], &[]), &o)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{key}={value}: {err}");
        }
    }
}
