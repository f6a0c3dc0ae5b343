//! Target `mount`: the options of the rootfs mounts containerd sends in
//! Create (`mount::parse_options`), as a list of strings or inside an
//! encoded `containerd.types.Mount`. Only parsing: nothing is mounted.
//!
//! Check: barge splits options into mount flags and the data string the
//! way containerd's own mount code does (its flag table: each flag sets or
//! clears one `MS_*` bit, in order; anything else is filesystem data, kept
//! in order), except that barge drops `defaults` where containerd passes
//! it on as data.

use arbitrary::Unstructured;
use barge_shim::fuzzing::parse_mount_options;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use nix::mount::MsFlags;

use super::{in_lane, lane, word};
use crate::driver::Target;

const LIST: u8 = 0;
const MOUNT_RAW: u8 = 1;
const LANES: u8 = 2;

/// containerd's table (mount/mount_linux.go): option, clears?, flag.
const CONTAINERD: &[(&str, bool, MsFlags)] = &[
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

const DATA: &[&str] = &[
    "defaults",
    "lowerdir=/var/lib/containerd/snapshots/1/fs:/var/lib/containerd/snapshots/2/fs",
    "upperdir=/u",
    "workdir=/w",
    "index=off",
    "userxattr",
    "size=65536k",
    "mode=755",
    "a,b",
    "",
    "=",
    "ro=1",
    "RO",
    " ro",
];

/// What containerd makes of `options`: flags, whether `rbind` was given,
/// and the data.
fn containerd(options: &[String]) -> (MsFlags, bool, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match CONTAINERD.iter().find(|(name, _, _)| name == o) {
            Some((_, true, f)) => flags.remove(*f),
            Some((_, false, f)) => flags.insert(*f),
            None if o == "defaults" => {}
            None => data.push(o.as_str()),
        }
    }
    (flags, options.iter().any(|o| o == "rbind"), data.join(","))
}

fn check(options: &[String]) -> &'static str {
    let got = parse_mount_options(options);
    let want = containerd(options);
    assert_eq!(
        got, want,
        "options {options:?}: barge's flags and data differ from containerd's"
    );
    match (got.0.is_empty(), got.2.is_empty()) {
        (true, true) => "nothing",
        (false, true) => "flags",
        (true, false) => "data",
        (false, false) => "flags and data",
    }
}

pub struct Mount;

impl Mount {
    pub fn new() -> Mount {
        Mount
    }
}

impl Default for Mount {
    fn default() -> Self {
        Mount::new()
    }
}

impl Target for Mount {
    fn name(&self) -> &'static str {
        "mount"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = vec![
            in_lane(LIST, &[0x42; 32]),
            in_lane(LIST, &[0x17, 0x99, 0x03, 0x61].repeat(10)),
        ];
        for options in [
            &["index=off", "lowerdir=/a:/b", "upperdir=/u", "workdir=/w"][..],
            &["rbind", "ro"],
            &["bind", "rw", "nosuid", "nodev"],
        ] {
            let m = api::Mount {
                type_: "overlay".into(),
                source: "overlay".into(),
                target: "rootfs".into(),
                options: options.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            seeds.push(in_lane(
                MOUNT_RAW,
                &m.write_to_bytes().expect("encode a Mount"),
            ));
        }
        seeds
    }

    fn run(&mut self, data: &[u8]) -> &'static str {
        let (lane, payload) = lane(data, LANES);
        if lane == MOUNT_RAW {
            return match api::Mount::parse_from_bytes(payload) {
                Ok(m) => check(&m.options),
                Err(_) => "mount refused",
            };
        }
        let mut u = Unstructured::new(payload);
        let names: Vec<&str> = CONTAINERD.iter().map(|(n, _, _)| *n).collect();
        let n = u.int_in_range(0..=10).unwrap_or(0);
        let options: Vec<String> = (0..n)
            .map(|_| {
                if u.ratio(2, 3).unwrap_or(true) {
                    word(&mut u, &names)
                } else {
                    word(&mut u, DATA)
                }
            })
            .collect();
        check(&options)
    }
}
