//! `jenga`: generate videos with Wan-architecture DiTs, fast, with Jenga sparse attention.

mod args;
mod bench;
mod bench_e2e;
mod bench_i2v;
mod bench_pipeline;
mod bench_policies;
mod bench_text;
mod bench_vae;
mod eval;
mod generate;
mod inspect;
mod launch;
mod policy;
mod request;
mod selftest;
mod timing;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go out whole; a usage mistake is one `error:` line like every other.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
    };
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
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The chain of contexts, outermost first, on one line — without saying a thing twice: an
/// error whose message already holds its source's (`(os error 2)`), or a context naming the
/// path the next message starts with (`--out foo.avi` + `foo.avi: …`).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for part in e.chain().map(|c| c.to_string()) {
        let part = part.trim();
        if part.is_empty() || line.contains(part) {
            continue;
        }
        let mut part = part;
        if let Some((head, rest)) = part.split_once(": ") {
            if line.ends_with(head) {
                part = rest;
            }
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(part);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn error_chain_says_nothing_twice() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let inner = anyhow::Error::new(io).context("reading x.json: entity not found");
        assert_eq!(one_line(&inner), "reading x.json: entity not found");
        let e =
            anyhow::anyhow!("foo.avi: unknown extension .avi (expected .mp4, .gif or a directory)")
                .context("--out foo.avi");
        assert_eq!(
            one_line(&e),
            "--out foo.avi: unknown extension .avi (expected .mp4, .gif or a directory)"
        );
        let e = anyhow::anyhow!("disk full").context("writing a.gif");
        assert_eq!(one_line(&e), "writing a.gif: disk full");
    }
}

#[cfg(test)]
mod cli_shape {
    /// clap's own consistency check (unique names, also across `global` flags and each
    /// subcommand's own; release builds skip it at run time).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::args::Cli::command().debug_assert();
    }
}
