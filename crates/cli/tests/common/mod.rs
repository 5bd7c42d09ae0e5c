//! Shared by the binary's integration tests.

use std::process::Command;

/// Runs the `jenga` binary: (success, stdout, stderr).
pub fn jenga(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jenga"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
