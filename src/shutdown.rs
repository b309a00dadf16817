//! Signals: SIGINT (Ctrl-C) and SIGTERM (what Container Apps sends to stop a container).

use std::future::Future;

/// Resolves on the first SIGINT or SIGTERM after this call. The handlers are installed by the
/// call itself, not when the future is first polled, so a signal sent right after a banner
/// that follows the call is never lost (nor fatal).
pub fn signalled() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                (None, Some(mut int)) => {
                    int.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The second signal of a two-tier shutdown ([`two_tier`]): `main` races the command against
/// it and exits at once (130) when it comes.
static FORCED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Resolves when a second signal asks to stop at once.
pub async fn forced() {
    FORCED.notified().await;
}

/// Two-tier shutdown: the first SIGTERM/SIGINT cancels `token` (stop taking work, drain); a
/// second one wakes [`forced`]. The handlers are installed by the call itself.
pub fn two_tier(token: tokio_util::sync::CancellationToken) {
    let first = signalled();
    tokio::spawn(async move {
        first.await;
        tracing::info!("signal received: finishing running passes (a second signal exits at once)");
        token.cancel();
        signalled().await;
        tracing::warn!("second signal: exiting now");
        FORCED.notify_one();
    });
}
