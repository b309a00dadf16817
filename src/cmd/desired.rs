//! The commands that read only the desired state: `validate`, `schema` and `permissions`.

use std::io::Write;
use std::path::PathBuf;

use super::{Error, Exit, plural};
use crate::cli::{Common, Output};
use crate::spec::{self, LoadOptions};

/// `validate [PATH...]`: every problem, one per line, then a summary (or one JSON document).
///
/// # Errors
/// Writing the output failed.
pub fn validate(
    common: &Common,
    paths: Vec<PathBuf>,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    let paths = if paths.is_empty() {
        vec![common.desired_state.clone()]
    } else {
        paths
    };
    let options = LoadOptions {
        subscription: common.subscription.clone(),
    };
    let loaded = spec::load(&paths, &options);
    match common.output {
        Output::Text | Output::Markdown => write_validate_text(&loaded, out)?,
        Output::Json => write_validate_json(&loaded, out)?,
    }
    Ok(if loaded.diagnostics.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// `schema`: the JSON Schema of every document kind.
///
/// # Errors
/// Writing the output failed.
pub fn schema(out: &mut (dyn Write + Send)) -> Result<Exit, Error> {
    out.write_all(spec::schema::render().as_bytes())?;
    Ok(Exit::Success)
}

/// `permissions`: the least-privilege custom roles for the desired state.
///
/// # Errors
/// The desired state is invalid (roles for half a tree would be wrong), or writing failed.
pub fn permissions(common: &Common, out: &mut (dyn Write + Send)) -> Result<Exit, Error> {
    let options = LoadOptions {
        subscription: common.subscription.clone(),
    };
    let loaded = spec::load(std::slice::from_ref(&common.desired_state), &options);
    if !loaded.diagnostics.is_empty() {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        return Err(Error::Setup(
            "the desired state is invalid; fix it first (roles for half a tree would be wrong)"
                .to_owned(),
        ));
    }
    let roles = crate::permissions::permissions(&loaded.state);
    let text = serde_json::to_string_pretty(&roles).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")?;
    Ok(Exit::Success)
}

fn write_validate_text(loaded: &spec::load::Loaded, out: &mut dyn Write) -> std::io::Result<()> {
    for d in &loaded.diagnostics {
        writeln!(out, "{d}")?;
    }
    // Notification targets are named only when there are some, so trees without them read
    // as before.
    let notifications = match loaded.state.notifications.len() {
        0 => String::new(),
        n => format!(
            ", {}",
            plural(n, "notification target", "notification targets")
        ),
    };
    let summary = format!(
        "{} in {} ({}, {}{notifications})",
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
    let notifications: Vec<_> = loaded.state.notifications.iter().map(|n| &n.name).collect();
    let report = serde_json::json!({
        "valid": loaded.diagnostics.is_empty(),
        "files": loaded.files,
        "documents": loaded.documents,
        "apps": apps,
        "registryRetentions": registries,
        "notifications": notifications,
        "diagnostics": loaded.diagnostics,
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}
