//! Helpers shared by the integration tests: scratch directories and the real binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the target dir, removed when dropped (kept if the test panicked,
/// so it can be inspected).
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "scratch-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The binary under test, in `dir`, with an environment cleaned of everything that could
/// change its behaviour (ACAR_*, AZURE_*, IDENTITY_*).
pub fn bin(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aca-reconciler"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ACAR_") || k.starts_with("AZURE_") || k.starts_with("IDENTITY_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs a command and returns its output, printing everything if `expected_code` differs.
pub fn run(cmd: &mut Command, expected_code: i32) -> Output {
    let out = cmd.output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(
        code,
        expected_code,
        "\ncommand: {cmd:?}\nexit: {code}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The crate root (tests run there, but the binary may run in a scratch dir).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
