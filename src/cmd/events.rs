//! `events`: what a running controller decided lately, like `kubectl get events`: the last
//! 100 events its `/status` keeps, oldest first.

use std::io::Write;

use serde_json::Value;

use super::{Error, Exit};
use crate::cli::{Common, EventsArgs, Output};

/// `events`: the running controller's recent events.
///
/// # Errors
/// The controller cannot be asked, or writing failed.
pub async fn events(
    common: &Common,
    args: &EventsArgs,
    out: &mut (dyn Write + Send),
) -> Result<Exit, Error> {
    let url = format!("{}/status", args.server.trim_end_matches('/'));
    // A stuck port-forward must not hang the command.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Setup(format!("cannot make an HTTP client: {e}")))?;
    let body = match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
        Ok(r) => return Err(Error::Setup(format!("{url} answered {}", r.status()))),
        Err(e) => {
            return Err(Error::Setup(format!(
                "cannot reach {url}: {} (is `aca-reconciler run` listening there? --server says where)",
                e.without_url()
            )));
        }
    };
    let Some(body) = body else {
        return Err(Error::Setup(format!("{url} did not answer JSON")));
    };
    let events: Vec<&Value> = body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            args.app
                .as_deref()
                .is_none_or(|app| e["app"]["name"].as_str() == Some(app))
        })
        .collect();
    if common.output == Output::Json {
        serde_json::to_writer_pretty(&mut *out, &events).map_err(std::io::Error::other)?;
        writeln!(out)?;
        return Ok(Exit::Success);
    }
    if body["leadership"] == "standby" {
        writeln!(
            out,
            "# {} is a standby replica: the leader's events are on the leader",
            args.server
        )?;
    }
    let now = crate::time::Clock::new().now();
    writeln!(
        out,
        "{:<9} {:<6} {:<21} {:<40} MESSAGE",
        "LAST SEEN", "TYPE", "REASON", "OBJECT"
    )?;
    for e in &events {
        let age = e["at"]
            .as_str()
            .and_then(crate::time::parse)
            .map_or_else(|| "?".to_owned(), |at| age((now - at).max(0)));
        let object = match (
            e["app"]["resourceGroup"].as_str(),
            e["app"]["name"].as_str(),
        ) {
            (Some(rg), Some(name)) => format!("{rg}/{name}"),
            _ if e["reason"] == "RetentionDone" => "registries".to_owned(),
            _ => e["source"].as_str().unwrap_or("controller").to_owned(),
        };
        let mut message = e["message"].as_str().unwrap_or("").to_owned();
        if let Some(details) = e["details"].as_object() {
            for (k, v) in details {
                message.push_str(&format!(" [{k}: {}]", v.as_str().unwrap_or("")));
            }
        }
        writeln!(
            out,
            "{:<9} {:<6} {:<21} {:<40} {}",
            age,
            e["severity"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            object,
            message
        )?;
    }
    if events.is_empty() {
        writeln!(
            out,
            "# no events{}",
            args.app
                .as_ref()
                .map_or(String::new(), |a| format!(" about {a}"))
        )?;
    }
    Ok(Exit::Success)
}

/// `45s`, `12m`, `3h`, `2d`, as kubectl shows ages.
fn age(ms: i64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(super::age(45_000), "45s");
        assert_eq!(super::age(720_000), "12m");
        assert_eq!(super::age(3 * 3_600_000), "3h");
        assert_eq!(super::age(3 * 86_400_000), "3d");
    }
}
