//! Target `wasm`: loading a guest up to linking, as the container's init
//! does before it runs it (`barge_wasm::fuzzing::prepare`: WAT to binary,
//! module or component, wasmtime's compile, the WASI preview 1 or WASI 0.2
//! linker, instantiate-pre). The guest never runs.
//!
//! Seeds: small modules and components written here, and the test
//! programs of examples/wasm when they are built (`make wasm-fixtures`
//! puts them in target/wasm/fixtures; `BARGE_FUZZ_WASM_SEEDS` names another
//! folder).

use std::path::PathBuf;

use crate::driver::Target;

const SMALL: &[&str] = &[
    r#"(module (func (export "_start")))"#,
    r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $x (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 8) "hi\n")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 8))
          (i32.store (i32.const 4) (i32.const 3))
          (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))
          (call $x (i32.const 0))))"#,
    r#"(module (memory 1 65536) (table 10 funcref) (global (mut i32) (i32.const 0))
        (func $f (param i32) (result i32) local.get 0 i32.const 1 i32.add)
        (func (export "_start") i32.const 1 call $f drop) (start $f2) (func $f2))"#,
    r#"(module (import "env" "nope" (func)) (func (export "_start")))"#,
    r#"(module (func (export "main")))"#,
    r#"(module (memory (export "_start") 1))"#,
    r#"(component)"#,
    r#"(component (core module (func (export "f"))))"#,
];

pub struct Wasm {
    seeds: Vec<Vec<u8>>,
}

impl Wasm {
    pub fn new() -> Wasm {
        let mut seeds: Vec<Vec<u8>> = SMALL
            .iter()
            .map(|w| wat::parse_str(w).expect("a seed is valid WAT"))
            .collect();
        seeds.extend(SMALL.iter().take(3).map(|w| w.as_bytes().to_vec()));
        let dir = std::env::var_os("BARGE_FUZZ_WASM_SEEDS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/fixtures")
            });
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm" || e == "wat"))
                .collect();
            files.sort();
            for f in files {
                if let Ok(bytes) = std::fs::read(&f) {
                    if bytes.len() <= 64 << 10 {
                        seeds.push(bytes);
                    }
                }
            }
        }
        Wasm { seeds }
    }
}

impl Default for Wasm {
    fn default() -> Self {
        Wasm::new()
    }
}

const DICT: &[&[u8]] = &[
    b"\0asm\x01\0\0\0",
    b"\0asm\x0d\0\x01\0",
    b"_start",
    b"wasi_snapshot_preview1",
    b"wasi:cli/run@0.2.0",
    b"wasi:http/incoming-handler@0.2.0",
    b"(func",
    b"(export",
    b"(import",
    b"(memory",
    b")",
    b"\xff\xff\xff\xff\x0f",
];

impl Target for Wasm {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        self.seeds.clone()
    }

    fn dict(&self) -> &'static [&'static [u8]] {
        DICT
    }

    fn max_len(&self) -> usize {
        64 << 10
    }

    fn run(&mut self, data: &[u8]) -> &'static str {
        match barge_wasm::fuzzing::prepare(data.to_vec()) {
            Ok(kind) => kind,
            Err(e) if e.contains("neither a WebAssembly binary nor valid WebAssembly text") => {
                "not wasm"
            }
            Err(e) if e.contains("is not valid WebAssembly") => "invalid",
            Err(e) if e.contains("without a `_start`") => "no _start",
            Err(e) if e.contains("needs an import") => "unknown import",
            Err(e) if e.contains("exports neither") => "component without run",
            Err(_) => "refused",
        }
    }
}
