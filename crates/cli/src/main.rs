//! `jenga`: generate videos with Wan-architecture DiTs, fast, with Jenga sparse attention.

mod args;
mod bench;
mod bench_e2e;
mod bench_policies;
mod device;
mod eval;
mod generate;
mod inspect;
mod policy;
mod selftest;
mod timing;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Generate(a) => generate::run(a),
        args::Command::Inspect(a) => inspect::run(a),
        args::Command::Bench(a) => bench::run(a),
        args::Command::Eval(a) => eval::run(a),
        args::Command::Selftest { device } => selftest::run(&device),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of contexts, outermost first.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
