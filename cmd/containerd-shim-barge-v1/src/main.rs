//! `containerd-shim-barge-v1`: the binary containerd runs for the runtime
//! `io.containerd.barge.v1`. It only wires the executors into the shim core.

use barge_executor::Executors;

fn main() {
    std::process::exit(barge_shim::main(|| {
        Executors::new(vec![
            Box::new(barge_native::Native::new()),
            Box::new(barge_wasm::Wasm::new()),
            Box::new(barge_oci_binary::OciBinary::new()),
        ])
    }));
}
