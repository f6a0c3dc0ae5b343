//! Choosing the executor for one container.

use crate::{CreateContext, Error, Executor, ExecutorChoice, Fit, Result};

/// The executors a shim was built with, in the order `auto` tries them.
pub struct Executors {
    all: Vec<Box<dyn Executor>>,
}

impl Executors {
    pub fn new(all: Vec<Box<dyn Executor>>) -> Self {
        Executors { all }
    }

    /// The executor with this name, as stored for `delete`.
    pub fn by_name(&self, name: &str) -> Option<&dyn Executor> {
        self.all
            .iter()
            .find(|e| e.name() == name)
            .map(|e| e.as_ref())
    }

    /// The executor for this container: the one the options name, or with
    /// `auto` the first that fits. When none fits, the error carries every
    /// executor's reason.
    pub fn select(&self, ctx: &CreateContext<'_>) -> Result<&dyn Executor> {
        let wanted = match ctx.options.executor {
            ExecutorChoice::Auto => None,
            ExecutorChoice::Native => Some("native"),
            ExecutorChoice::OciBinary => Some("oci-binary"),
            ExecutorChoice::Wasm => Some("wasm"),
        };
        if let Some(name) = wanted {
            let executor = self.by_name(name).ok_or_else(|| {
                Error::InvalidArgument(format!("executor `{name}` is not built into this shim"))
            })?;
            return match executor.fits(ctx) {
                Fit::Yes => Ok(executor),
                Fit::No(why) => Err(Error::InvalidArgument(format!(
                    "{why}; {}",
                    executor.runs()
                ))),
            };
        }
        let mut reasons = Vec::new();
        for executor in self.all.iter().filter(|e| e.name() != "oci-binary") {
            match executor.fits(ctx) {
                Fit::Yes => return Ok(executor.as_ref()),
                Fit::No(why) => reasons.push((executor.as_ref(), why)),
            }
        }
        // Usually every executor found the same thing: say it once.
        let text = match reasons.first() {
            Some((_, first)) if reasons.iter().all(|(_, why)| why == first) => format!(
                "{first}. {}",
                reasons
                    .iter()
                    .map(|(e, _)| e.runs())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => reasons
                .iter()
                .map(|(e, why)| format!("{}: {why} ({})", e.name(), e.runs()))
                .collect::<Vec<_>>()
                .join("; "),
        };
        Err(Error::InvalidArgument(format!(
            "no executor can run container {}: {text}",
            ctx.id
        )))
    }
}
