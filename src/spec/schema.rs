//! The JSON Schema (draft 2020-12) of every document kind, generated from [`super::raw`].
//!
//! The committed copy, `desired-state/schema.json`, is what editors use through the
//! `# yaml-language-server: $schema=...` line; a test fails when it is stale.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::raw::{
    ContainerAppDocument, DefaultsDocument, NotificationDocument, RegistryRetentionDocument,
};

/// Where the schema is published inside a desired-state repository.
pub const SCHEMA_ID: &str = "https://aca-reconciler.dev/schema/v1/desired-state.json";

/// The schema of one desired-state document: any one of the kinds.
pub fn document_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let kinds = [
        generator.subschema_for::<ContainerAppDocument>(),
        generator.subschema_for::<DefaultsDocument>(),
        generator.subschema_for::<RegistryRetentionDocument>(),
        generator.subschema_for::<NotificationDocument>(),
    ];
    let defs: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "aca-reconciler desired state",
        "description": "One document of an aca-reconciler desired-state tree (apiVersion aca-reconciler/v1). A file may hold several, separated by ---.",
        "oneOf": kinds,
        "$defs": defs,
    })
}

/// The schema as the `schema` command prints it (pretty, with a trailing newline).
pub fn render() -> String {
    let mut out = serde_json::to_string_pretty(&document_schema()).unwrap_or_default();
    out.push('\n');
    out
}
