//! Loading valid trees: the shipped example, Defaults inheritance, the file guards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is how a test fails

mod common;

use std::fs;
use std::path::PathBuf;

use aca_reconciler::spec::{self, AppKey, LoadOptions, RevisionMode, TrafficSpec, TrafficTo};
use common::Scratch;

const PROD_SUB: &str = "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b";
const DEV_SUB: &str = "2b7d9e14-5c3a-4f8b-a6d1-0e9f8c7b6a54";

#[test]
fn the_example_desired_state_is_valid_and_complete() {
    let loaded = spec::load(&[PathBuf::from("desired-state")], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let state = &loaded.state;
    assert_eq!(state.apps.len(), 10);
    assert_eq!(state.registries.len(), 1);
    assert_eq!(
        state
            .subscriptions
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [DEV_SUB, PROD_SUB]
    );

    let user = &state.apps[&AppKey::new(PROD_SUB, "rg-xshopai-prod", "ca-user-service")];
    assert_eq!(user.revision_mode, Some(RevisionMode::Multiple));
    assert_eq!(user.replicas.map(|r| (r.min, r.max)), Some((2, 10)));
    assert_eq!(user.keep_active, Some(5));
    assert_eq!(
        user.images.get("user-service").map(|i| i.full.as_str()),
        Some("crxshopaiprod.azurecr.io/user-service:v1.2.0")
    );

    let order = &state.apps[&AppKey::new(PROD_SUB, "rg-xshopai-prod", "ca-order-service")];
    let Some(TrafficSpec::Split(split)) = &order.traffic else {
        panic!("order-service has a canary split")
    };
    assert_eq!(split.len(), 2);
    assert_eq!(
        split[0].to,
        TrafficTo::Revision("ca-order-service--v172".into())
    );
    assert_eq!(split[1].to, TrafficTo::Latest);
    assert_eq!(split[0].weight + split[1].weight, 100);

    let dev_user = &state.apps[&AppKey::new(DEV_SUB, "rg-xshopai-dev", "ca-user-service")];
    assert_eq!(dev_user.replicas.map(|r| (r.min, r.max)), Some((0, 3)));

    let retention = &state.registries[0];
    assert_eq!(retention.registry, "crxshopaidev.azurecr.io");
    assert_eq!(retention.keep_last, 10);
    assert_eq!(retention.older_than.map(|d| d.as_secs()), Some(7 * 86_400));
}

const APP: &str = "apiVersion: aca-reconciler/v1\nkind: ContainerApp\nmetadata:\n  name: NAME\nspec:\n  replicas: {min: 1, max: 2}\n";

fn defaults(name: &str, fields: &str) -> String {
    format!(
        "apiVersion: aca-reconciler/v1\nkind: Defaults\nmetadata: {{name: {name}}}\nspec:\n{fields}"
    )
}

#[test]
fn a_deeper_defaults_overrides_field_by_field() {
    let s = Scratch::new();
    s.write(
        "_defaults.yaml",
        &defaults(
            "root",
            "  subscription: 00000000-0000-0000-0000-00000000000a\n  resourceGroup: rg-root\n",
        ),
    );
    s.write(
        "team/_defaults.yaml",
        &defaults("team", "  resourceGroup: rg-team\n"),
    );
    s.write("team/api/ca-api.yaml", &APP.replace("NAME", "ca-api"));
    s.write("ca-top.yaml", &APP.replace("NAME", "ca-top"));
    // A value written in the document wins over every Defaults.
    s.write(
        "team/ca-own.yaml",
        &APP.replace("NAME", "ca-own\n  resourceGroup: rg-own"),
    );
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let keys: Vec<String> = loaded
        .state
        .apps
        .keys()
        .map(|k| format!("{}/{}/{}", &k.subscription[30..], k.resource_group, k.name))
        .collect();
    assert_eq!(
        keys,
        [
            "00000a/rg-own/ca-own",
            "00000a/rg-root/ca-top",
            "00000a/rg-team/ca-api"
        ]
    );
}

#[test]
fn subscription_option_fills_in_last() {
    let s = Scratch::new();
    s.write(
        "_defaults.yaml",
        &defaults("root", "  resourceGroup: rg-x\n"),
    );
    s.write("ca-x.yaml", &APP.replace("NAME", "ca-x"));
    let without = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert_eq!(without.diagnostics.len(), 1);
    assert!(without.state.apps.is_empty());
    let options = LoadOptions {
        subscription: Some("00000000-0000-0000-0000-0000000000BB".into()),
    };
    let with = spec::load(&[s.path().to_path_buf()], &options);
    assert!(with.diagnostics.is_empty(), "{:#?}", with.diagnostics);
    let key = with.state.apps.keys().next().unwrap();
    assert_eq!(key.subscription, "00000000-0000-0000-0000-0000000000bb");
    assert!(
        with.state
            .subscriptions
            .contains("00000000-0000-0000-0000-0000000000bb")
    );
}

#[test]
fn empty_files_hidden_entries_and_other_extensions_are_ignored() {
    let s = Scratch::new();
    s.write("empty.yaml", "");
    s.write("comments.yml", "# nothing yet\n");
    s.write(
        ".github/workflows/plan.yaml",
        "on: [pull_request]\njobs: {}\n",
    );
    s.write(".hidden.yaml", "not: desired state\n");
    s.write("notes.txt", "kind: ContainerApp\n");
    s.write(
        "app.yml",
        &APP.replace(
            "NAME",
            "ca-x\n  resourceGroup: rg\n  subscription: 00000000-0000-0000-0000-000000000000",
        ),
    );
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    assert_eq!(
        (loaded.files, loaded.documents, loaded.state.apps.len()),
        (3, 1, 1)
    );
}

#[test]
fn a_file_over_one_mebibyte_is_refused_unread() {
    let s = Scratch::new();
    let big = format!("# {}\n", "x".repeat(1024 * 1024));
    s.write("big.yaml", &big);
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert_eq!(loaded.diagnostics.len(), 1);
    assert!(
        loaded.diagnostics[0].message.contains("larger than 1 MiB"),
        "{:?}",
        loaded.diagnostics
    );
}

#[test]
fn a_bad_file_does_not_hide_the_good_ones() {
    let s = Scratch::new();
    let head = "  resourceGroup: rg\n  subscription: 00000000-0000-0000-0000-000000000000";
    s.write("a.yaml", &APP.replace("NAME", &format!("ca-a\n{head}")));
    s.write("b.yaml", "kind: [\n");
    s.write("c.yaml", &APP.replace("NAME", &format!("ca-c\n{head}")));
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert_eq!(loaded.diagnostics.len(), 1);
    assert!(loaded.diagnostics[0].file.ends_with("b.yaml"));
    let names: Vec<&str> = loaded.state.apps.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ca-a", "ca-c"]);
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_is_walked_once() {
    let s = Scratch::new();
    s.write(
        "apps/app.yaml",
        &APP.replace(
            "NAME",
            "ca-x\n  resourceGroup: rg\n  subscription: 00000000-0000-0000-0000-000000000000",
        ),
    );
    std::os::unix::fs::symlink(s.path(), s.path().join("apps/loop")).unwrap();
    let loaded = spec::load(&[s.path().to_path_buf()], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    assert_eq!(loaded.files, 1);
}

#[test]
fn files_given_one_by_one_take_defaults_from_their_own_directory() {
    let s = Scratch::new();
    s.write(
        "_defaults.yaml",
        &defaults(
            "d",
            "  subscription: 00000000-0000-0000-0000-000000000000\n  resourceGroup: rg\n",
        ),
    );
    s.write("ca-x.yaml", &APP.replace("NAME", "ca-x"));
    let paths = [s.path().join("_defaults.yaml"), s.path().join("ca-x.yaml")];
    let loaded = spec::load(&paths, &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    assert_eq!(loaded.state.apps.len(), 1);
    fs::remove_file(s.path().join("_defaults.yaml")).unwrap();
}
