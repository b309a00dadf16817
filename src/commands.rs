//! What each subcommand does, given parsed options. `main` maps the result to an exit code.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Cli, Command, Output};
use crate::spec::{self, LoadOptions};

/// Runs the command and returns its exit code.
///
/// # Errors
/// Only I/O errors writing the output; everything about the input is reported and mapped to
/// the command's exit code.
pub fn run(cli: Cli, out: &mut dyn Write) -> std::io::Result<ExitCode> {
    match cli.command {
        Command::Schema => {
            out.write_all(spec::schema::render().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                vec![cli.common.desired_state]
            } else {
                paths
            };
            let options = LoadOptions {
                subscription: cli.common.subscription,
            };
            let loaded = spec::load(&paths, &options);
            match cli.common.output {
                Output::Text => write_validate_text(&loaded, out)?,
                Output::Json => write_validate_json(&loaded, out)?,
            }
            Ok(if loaded.diagnostics.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_validate_text(loaded: &spec::load::Loaded, out: &mut dyn Write) -> std::io::Result<()> {
    for d in &loaded.diagnostics {
        writeln!(out, "{d}")?;
    }
    let summary = format!(
        "{} in {} ({}, {})",
        plural(loaded.documents, "document", "documents"),
        plural(loaded.files, "file", "files"),
        plural(loaded.state.apps.len(), "app", "apps"),
        plural(
            loaded.state.registries.len(),
            "registry policy",
            "registry policies"
        ),
    );
    if loaded.diagnostics.is_empty() {
        writeln!(out, "valid: {summary}")
    } else {
        writeln!(
            out,
            "invalid: {} in {summary}",
            plural(loaded.diagnostics.len(), "problem", "problems")
        )
    }
}

fn write_validate_json(loaded: &spec::load::Loaded, out: &mut dyn Write) -> std::io::Result<()> {
    let apps: Vec<_> = loaded.state.apps.keys().collect();
    let registries: Vec<_> = loaded.state.registries.iter().map(|r| &r.name).collect();
    let report = serde_json::json!({
        "valid": loaded.diagnostics.is_empty(),
        "files": loaded.files,
        "documents": loaded.documents,
        "apps": apps,
        "registryRetentions": registries,
        "diagnostics": loaded.diagnostics,
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}
