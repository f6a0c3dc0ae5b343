//! `barge-fuzz TARGET|all [--count N] [--seed S] [--skip I] [--time-limit-ms MS]
//! [--max-seconds S] [--progress-seconds S] [--artifacts DIR] [--dump]
//! [--input FILE]`: runs fuzz targets and reports their inputs per second
//! and what the inputs did. `--input` runs one saved input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use barge_fuzz::driver::{self, Config};
use barge_fuzz::targets;

const USAGE: &str = "usage: barge-fuzz TARGET|all [--count N] [--seed S] [--skip I] \
[--time-limit-ms MS] [--max-seconds S] [--progress-seconds S] [--artifacts DIR] [--dump] [--input FILE]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "barge-fuzz: {e}\n{USAGE}\ntargets: {}",
                targets::NAMES.join(", ")
            );
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or("no target")?;
    let mut config = Config::default();
    let mut input = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--count" => config.count = number(value()?)?,
            "--seed" => config.seed = number(value()?)?,
            "--skip" => config.skip = number(value()?)?,
            "--time-limit-ms" => config.time_limit = Duration::from_millis(number(value()?)?),
            "--artifacts" => config.artifacts = PathBuf::from(value()?),
            "--input" => input = Some(PathBuf::from(value()?)),
            "--dump" => config.dump = true,
            "--max-seconds" => config.max_time = Some(Duration::from_secs(number(value()?)?)),
            "--progress-seconds" => config.progress = Some(Duration::from_secs(number(value()?)?)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let names: Vec<&str> = if which == "all" {
        targets::NAMES.to_vec()
    } else if targets::NAMES.contains(&which.as_str()) {
        vec![which.as_str()]
    } else {
        return Err(format!("unknown target {which}"));
    };
    if let Some(file) = input {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for name in names {
            let mut target = targets::make(name).ok_or("no such target")?;
            println!("{name}: {}", target.run(&bytes));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (mut passed, mut failed) = (0, 0);
    for name in names {
        let mut target = targets::make(name).ok_or("no such target")?;
        let report = driver::run(target.as_mut(), &config);
        println!("{report}");
        if report.finding.is_some() {
            failed += 1;
        } else {
            passed += 1;
        }
    }
    println!("fuzz: {passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
