//! Spawning a reference script (`--reference CMD`) in the same run and reading its JSON lines.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Quote one argument for `sh -c`.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run `CMD ARGS...` through `sh -c`, wait, and return the JSON objects it printed one per
/// line on stdout (other lines are echoed). If it cannot run, fails or prints no JSON, print
/// one line saying the reference was skipped and why, and return `None`: a missing Python or
/// torch never fails the benchmark.
pub fn run(cmd: &str, args: &[String]) -> Option<Vec<serde_json::Value>> {
    let line = std::iter::once(cmd.to_string())
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    println!("reference: {line}");
    let t0 = Instant::now();
    let out = match Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("reference skipped: cannot start `sh -c {cmd}`: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = Vec::new();
    for l in stdout.lines() {
        match serde_json::from_str::<serde_json::Value>(l.trim()) {
            Ok(v) if v.is_object() => lines.push(v),
            _ if !l.trim().is_empty() => println!("  | {l}"),
            _ => {}
        }
    }
    let last_err = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    if !out.status.success() {
        let code = out
            .status
            .code()
            .map_or("a signal".to_string(), |c| c.to_string());
        println!("reference skipped: `{cmd}` exited with {code}: {last_err}");
        return None;
    }
    if lines.is_empty() {
        println!("reference skipped: `{cmd}` printed no JSON lines {last_err}");
        return None;
    }
    println!(
        "reference: {} result lines in {:.1} s",
        lines.len(),
        t0.elapsed().as_secs_f64()
    );
    Some(lines)
}

/// A named tensor for a reference script: name, shape, values.
pub type Tensor = (String, Vec<usize>, Vec<f32>);

/// [`run`] with tensors handed over in files: each `(file name, tensors)` is written (f32
/// safetensors) to a temporary directory, `args` gets that directory and builds the flags, and
/// the directory is removed after the reference ran.
pub fn run_with_files(
    cmd: &str,
    tag: &str,
    files: &[(&str, &[Tensor])],
    args: impl FnOnce(&Path) -> Vec<String>,
) -> Result<Option<Vec<serde_json::Value>>> {
    let dir = std::env::temp_dir().join(format!("jenga-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    for (name, tensors) in files {
        let views: Vec<_> = tensors
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.clone(), v.as_slice()))
            .collect();
        jenga_models::export_f32(&views, &dir.join(name))?;
    }
    let lines = run(cmd, &args(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(quote("/tmp/a-b_c.json"), "/tmp/a-b_c.json");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        let got = run("printf '%s\\n'", &["{\"a\": \"x y\"}".into()]).unwrap();
        assert_eq!(got, vec![serde_json::json!({"a": "x y"})]);
        assert!(run("exit 3", &[]).is_none());
        assert!(run("echo not json", &[]).is_none());
    }
}
