//! Delivery: events to the targets `kind: Notification` documents declare.
//!
//! (Interface; the workers, rendering and retries are being built.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Event, NotificationSpec};

/// How the notifier reaches targets.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// GitHub's API for `type: github` targets without their own `apiUrl`.
    pub github_api_url: String,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            github_api_url: "https://api.github.com".to_owned(),
        }
    }
}

/// Routes events to targets. Cheap to call from the controller's loop: [`Notifier::send`]
/// never blocks and never fails.
#[derive(Debug)]
pub struct Notifier {
    options: NotifierOptions,
    targets: Mutex<(Vec<NotificationSpec>, PathBuf)>,
}

impl Notifier {
    /// A notifier with no targets yet.
    pub fn new(options: NotifierOptions) -> Self {
        Self {
            options,
            targets: Mutex::new((Vec::new(), PathBuf::new())),
        }
    }

    /// The targets now: on every desired-state reload. `root` is the desired-state root that
    /// `directories:` filters are relative to.
    pub fn configure(&self, specs: &[NotificationSpec], root: &Path) {
        let mut targets = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *targets = (specs.to_vec(), root.to_path_buf());
    }

    /// Hands `events` to every target whose filter takes them.
    pub fn send(&self, events: &[Event]) {
        let _ = (&self.options, events);
    }
}
