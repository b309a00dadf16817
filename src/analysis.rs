//! Placeholder until the analysis branch lands (same public API).
#![allow(missing_docs, dead_code)]

use crate::rollout::{AnalysisSpec, Check, Verdict};
use crate::spec::AppKey;
use crate::time::Millis;

#[derive(Debug)]
pub struct CheckTarget {
    pub at: Millis,
    pub step: i32,
    pub weight: u32,
    pub stable: String,
    pub canary: String,
    pub window: (Millis, Millis),
    pub probe_base: Option<String>,
}

#[derive(Debug)]
pub struct Analyzer;

impl Analyzer {
    pub async fn check(&self, _key: &AppKey, _spec: &AnalysisSpec, t: &CheckTarget) -> Check {
        Check {
            at: t.at,
            canary: t.canary.clone(),
            step: t.step,
            window: t.window,
            stable: None,
            canary_counts: None,
            probes: Vec::new(),
            verdict: Verdict::Error,
            reason: "placeholder".to_owned(),
        }
    }
}
