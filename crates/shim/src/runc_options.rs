//! containerd's runc options, mapped onto barge's [`Options`].
//!
//! Each field of `containerd.runc.v1.Options` (and of the older
//! `containerd.linux.runc.CreateOptions`) means here what it means to
//! containerd-shim-runc-v2:
//!
//! | field | barge |
//! | --- | --- |
//! | `BinaryName` | the `oci-binary` executor with that runtime binary |
//! | `Root` | `runtime_root` |
//! | `SystemdCgroup` | `systemd_cgroup` |
//! | `NoPivotRoot` | `no_pivot_root` |
//! | `NoNewKeyring` | `no_new_keyring` |
//! | `ShimCgroup` | `shim_cgroup`: the shim joins it at `start` |
//! | `IoUid`, `IoGid` | `io_uid`, `io_gid`: the owner of the process's stdio |
//! | `TaskApiAddress`, `TaskApiVersion` | read by containerd, which connects there instead of starting a shim; nothing for a shim to do |
//!
//! The CRIU fields (and CreateOptions' restore settings) are for
//! checkpoint and restore, which barge does not do yet: one that is set
//! fails Create, naming it. So does a field barge does not know, rather
//! than being ignored. A field at its default value is as good as absent,
//! as protobuf has it.

use barge_executor::{ExecutorChoice, Options};

use crate::error::{Error, Result};
use crate::wire::{fields, Value};

/// The runc options messages barge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// `containerd.runc.v1.Options`.
    RuncV1,
    /// `containerd.linux.runc.CreateOptions`.
    LinuxCreate,
}

/// What a field sets.
#[derive(Debug, Clone, Copy)]
enum Meaning {
    NoPivotRoot,
    NoNewKeyring,
    ShimCgroup,
    IoUid,
    IoGid,
    BinaryName,
    Root,
    SystemdCgroup,
    /// Consumed by containerd itself.
    ForContainerd,
    /// Something barge cannot do; the text says what it is for.
    Unsupported(&'static str),
}

/// How a field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    U32,
    Text,
}

struct Field {
    number: u64,
    /// The Go name, as users write it in containerd's config.
    name: &'static str,
    kind: Kind,
    meaning: Meaning,
}

const fn f(number: u64, name: &'static str, kind: Kind, meaning: Meaning) -> Field {
    Field {
        number,
        name,
        kind,
        meaning,
    }
}

const CHECKPOINT: &str = "checkpoint and restore (CRIU) are not supported by barge yet";

/// `api/types/runc/options/oci.proto`.
const RUNC_V1: &[Field] = &[
    f(1, "NoPivotRoot", Kind::Bool, Meaning::NoPivotRoot),
    f(2, "NoNewKeyring", Kind::Bool, Meaning::NoNewKeyring),
    f(3, "ShimCgroup", Kind::Text, Meaning::ShimCgroup),
    f(4, "IoUid", Kind::U32, Meaning::IoUid),
    f(5, "IoGid", Kind::U32, Meaning::IoGid),
    f(6, "BinaryName", Kind::Text, Meaning::BinaryName),
    f(7, "Root", Kind::Text, Meaning::Root),
    // Removed in containerd 2.0; 1.x clients may still send it.
    f(8, "CriuPath", Kind::Text, Meaning::Unsupported(CHECKPOINT)),
    f(9, "SystemdCgroup", Kind::Bool, Meaning::SystemdCgroup),
    f(
        10,
        "CriuImagePath",
        Kind::Text,
        Meaning::Unsupported(CHECKPOINT),
    ),
    f(
        11,
        "CriuWorkPath",
        Kind::Text,
        Meaning::Unsupported(CHECKPOINT),
    ),
    f(12, "TaskApiAddress", Kind::Text, Meaning::ForContainerd),
    f(13, "TaskApiVersion", Kind::U32, Meaning::ForContainerd),
];

/// `runtime/linux/runctypes/runc.proto` (containerd 1.x).
const LINUX_CREATE: &[Field] = &[
    f(1, "NoPivotRoot", Kind::Bool, Meaning::NoPivotRoot),
    f(2, "OpenTcp", Kind::Bool, Meaning::Unsupported(CHECKPOINT)),
    f(
        3,
        "ExternalUnixSockets",
        Kind::Bool,
        Meaning::Unsupported(CHECKPOINT),
    ),
    f(4, "Terminal", Kind::Bool, Meaning::Unsupported(CHECKPOINT)),
    f(5, "FileLocks", Kind::Bool, Meaning::Unsupported(CHECKPOINT)),
    f(
        6,
        "EmptyNamespaces",
        Kind::Text,
        Meaning::Unsupported(CHECKPOINT),
    ),
    f(
        7,
        "CgroupsMode",
        Kind::Text,
        Meaning::Unsupported(CHECKPOINT),
    ),
    f(8, "NoNewKeyring", Kind::Bool, Meaning::NoNewKeyring),
    f(9, "ShimCgroup", Kind::Text, Meaning::ShimCgroup),
    f(10, "IoUid", Kind::U32, Meaning::IoUid),
    f(11, "IoGid", Kind::U32, Meaning::IoGid),
    f(
        12,
        "CriuWorkPath",
        Kind::Text,
        Meaning::Unsupported(CHECKPOINT),
    ),
    f(
        13,
        "CriuImagePath",
        Kind::Text,
        Meaning::Unsupported(CHECKPOINT),
    ),
];

/// A field's value once read.
enum Read {
    Flag(bool),
    Number(u32),
    Text(String),
}

impl Read {
    fn is_default(&self) -> bool {
        match self {
            Read::Flag(b) => !b,
            Read::Number(n) => *n == 0,
            Read::Text(s) => s.is_empty(),
        }
    }
}

impl std::fmt::Display for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Read::Flag(b) => write!(f, "{b}"),
            Read::Number(n) => write!(f, "{n}"),
            Read::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl Message {
    /// The message of this protobuf name, if it is one of ours.
    pub fn named(name: &str) -> Option<Message> {
        [Message::RuncV1, Message::LinuxCreate]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// The protobuf name, as it ends a type URL.
    pub fn name(self) -> &'static str {
        match self {
            Message::RuncV1 => "containerd.runc.v1.Options",
            Message::LinuxCreate => "containerd.linux.runc.CreateOptions",
        }
    }

    fn fields(self) -> &'static [Field] {
        match self {
            Message::RuncV1 => RUNC_V1,
            Message::LinuxCreate => LINUX_CREATE,
        }
    }

    /// Barge's options for these bytes of the message: the defaults, with
    /// every field that is set applied.
    pub fn decode(self, bytes: &[u8]) -> Result<Options> {
        let message = self.name();
        let invalid = |text: String| Error::InvalidArgument(format!("{message}: {text}"));
        let mut options = Options::default();
        for (number, value) in fields(bytes, message)? {
            let field = self
                .fields()
                .iter()
                .find(|f| f.number == number)
                .ok_or_else(|| {
                    invalid(format!(
                        "field number {number} is unknown to barge, which refuses what it cannot honour"
                    ))
                })?;
            let name = field.name;
            let read = match (field.kind, value) {
                (Kind::Bool, Value::Varint(v)) => Read::Flag(v != 0),
                (Kind::U32, Value::Varint(v)) => Read::Number(
                    u32::try_from(v).map_err(|_| invalid(format!("{name} {v} is out of range")))?,
                ),
                (Kind::Text, Value::Bytes(_)) => Read::Text(value.text(message)?),
                _ => {
                    return Err(invalid(format!(
                        "{name} is not encoded as a {:?}",
                        field.kind
                    )))
                }
            };
            if read.is_default() {
                continue;
            }
            apply(&mut options, field, read).map_err(invalid)?;
        }
        options.validate()?;
        Ok(options)
    }
}

fn apply(options: &mut Options, field: &Field, read: Read) -> std::result::Result<(), String> {
    let name = field.name;
    let absolute = |path: &str| -> std::result::Result<(), String> {
        let p = std::path::Path::new(path);
        let up = p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !p.is_absolute() || up {
            return Err(format!(
                "{name} must be an absolute path without `..`, got {path:?}"
            ));
        }
        Ok(())
    };
    match (field.meaning, read) {
        (Meaning::NoPivotRoot, Read::Flag(b)) => options.no_pivot_root = b,
        (Meaning::NoNewKeyring, Read::Flag(b)) => options.no_new_keyring = b,
        (Meaning::SystemdCgroup, Read::Flag(b)) => options.systemd_cgroup = b,
        (Meaning::IoUid, Read::Number(n)) => options.io_uid = n,
        (Meaning::IoGid, Read::Number(n)) => options.io_gid = n,
        (Meaning::ShimCgroup, Read::Text(s)) => {
            absolute(&s)?;
            options.shim_cgroup = Some(s);
        }
        (Meaning::Root, Read::Text(s)) => {
            absolute(&s)?;
            options.runtime_root = Some(s.into());
        }
        (Meaning::BinaryName, Read::Text(s)) => {
            options.executor = ExecutorChoice::OciBinary;
            options.runtime = s;
        }
        (Meaning::ForContainerd, read) => {
            log::debug!("runtime option {name} = {read} is for containerd; nothing to do here");
        }
        (Meaning::Unsupported(why), read) => {
            return Err(format!(
                "{name} is set ({read}), which barge cannot honour: {why}"
            ))
        }
        (_, read) => return Err(format!("{name} has an unexpected value {read}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;

    /// A protobuf key: field number and wire type.
    fn key(number: u8, wire: u8) -> u8 {
        (number << 3) | wire
    }

    fn flag(number: u8) -> Vec<u8> {
        vec![key(number, 0), 1]
    }

    fn text(number: u8, s: &str) -> Vec<u8> {
        let mut v = vec![key(number, 2), s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// A varint field; 100000 is `a0 8d 06` on the wire.
    fn number(number: u8, n: u32) -> Vec<u8> {
        let mut v = Vec::new();
        crate::wire::varint_field(&mut v, number.into(), n.into());
        v
    }

    fn decode(type_url: &str, parts: &[Vec<u8>]) -> Result<Options> {
        crate::options::decode(Some(&Any {
            type_url: type_url.into(),
            value: parts.concat(),
            ..Default::default()
        }))
    }

    const RUNC: &str = "containerd.runc.v1.Options";
    const CREATE: &str = "containerd.linux.runc.CreateOptions";

    #[test]
    fn every_runc_v1_field_that_barge_honours() {
        let o = decode(
            RUNC,
            &[
                flag(1),
                flag(2),
                text(3, "/barge/shims"),
                number(4, 100000),
                number(5, 100001),
                text(6, "crun"),
                text(7, "/run/crun-root"),
                flag(9),
                text(12, "ttrpc+unix:///run/sandbox.sock"),
                number(13, 3),
            ],
        )
        .unwrap();
        assert!(o.no_pivot_root && o.no_new_keyring && o.systemd_cgroup);
        assert_eq!(o.shim_cgroup.as_deref(), Some("/barge/shims"));
        assert_eq!(o.io_owner(), Some((100000, 100001)));
        assert_eq!(
            (o.executor, o.runtime.as_str()),
            (ExecutorChoice::OciBinary, "crun")
        );
        assert_eq!(o.runtime_root.as_deref(), Some("/run/crun-root".as_ref()));
    }

    #[test]
    fn defaults_and_empty_messages_change_nothing() {
        assert_eq!(decode(RUNC, &[]).unwrap(), Options::default());
        // Fields written at their default values, as some encoders do.
        let zeros = [vec![key(1, 0), 0], number(4, 0), text(6, ""), text(10, "")];
        assert_eq!(decode(RUNC, &zeros).unwrap(), Options::default());
        // The type URL prefix of typeurl.MarshalAny.
        let o = decode(&format!("type.googleapis.com/{RUNC}"), &[flag(1)]).unwrap();
        assert!(o.no_pivot_root);
        // Without BinaryName the executor is still picked by the entrypoint.
        let o = decode(RUNC, &[flag(9)]).unwrap();
        assert_eq!(o.executor, ExecutorChoice::Auto);
    }

    #[test]
    fn linux_create_options_of_containerd_1() {
        // What ctr 1.7 sends for `--no-pivot --uidmap 0:100000:65536 --gidmap 0:100000:65536`.
        let o = decode(
            CREATE,
            &[
                flag(1),
                flag(8),
                text(9, "/shims"),
                number(10, 100000),
                number(11, 100000),
            ],
        )
        .unwrap();
        assert!(o.no_pivot_root && o.no_new_keyring);
        assert_eq!(o.shim_cgroup.as_deref(), Some("/shims"));
        assert_eq!(o.io_owner(), Some((100000, 100000)));
        assert_eq!(o.executor, ExecutorChoice::Auto);
    }

    #[test]
    fn what_barge_cannot_honour_is_named() {
        let cases: &[(&str, Vec<u8>, &str)] = &[
            (RUNC, text(10, "/var/lib/criu"), "CriuImagePath"),
            (RUNC, text(11, "/tmp/work"), "CriuWorkPath"),
            (RUNC, text(8, "/usr/sbin/criu"), "CriuPath"),
            (CREATE, flag(2), "OpenTcp"),
            (CREATE, text(6, "network"), "EmptyNamespaces"),
            (CREATE, text(13, "/img"), "CriuImagePath"),
        ];
        for (message, bytes, name) in cases {
            let err = decode(message, std::slice::from_ref(bytes))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(message) && err.contains(name) && err.contains("cannot honour"),
                "{err}"
            );
        }
        let err = decode(RUNC, &[flag(14)]).unwrap_err().to_string();
        assert!(err.contains("field number 14"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = decode(RUNC, &[text(7, "relative/root")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Root") && err.contains("absolute"), "{err}");
        let err = decode(RUNC, &[text(3, "/a/../b")]).unwrap_err().to_string();
        assert!(err.contains("ShimCgroup"), "{err}");
        // A string where a bool belongs.
        let err = decode(RUNC, &[text(1, "yes")]).unwrap_err().to_string();
        assert!(err.contains("NoPivotRoot"), "{err}");
        let err = decode(RUNC, &[vec![key(4, 0), 0xff, 0xff, 0xff, 0xff, 0x1f]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("IoUid") && err.contains("range"), "{err}");
        let err = decode(RUNC, &[vec![key(6, 2), 5, b'r']])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("malformed containerd.runc.v1.Options"),
            "{err}"
        );
    }
}
