//! Figures that barge cannot be measured on yet. Each is reported as a row
//! that says so, never skipped in silence. To measure one, replace its body
//! with a measurement that returns `Outcome::Rows` (see `lifecycle.rs` for
//! the pattern: interleave the variants, one `Row` per figure).

use anyhow::Result;

use super::{Bench, Outcome};

/// Exec latency: `ctr task exec` into a running container, per exec.
pub fn exec_latency(_b: &Bench) -> Result<Outcome> {
    Ok(Outcome::NotImplemented(
        "barge answers the Exec RPC with UNIMPLEMENTED".into(),
    ))
}
