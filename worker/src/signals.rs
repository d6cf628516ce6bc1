//! OS signals for single-phase services: [`stop_on_signal`] turns the first SIGTERM or
//! SIGINT into a cancelled token. A ground-floor module (it imports nothing of the
//! crate), so services run on their own (`highway scheduler`, `highway gc`) and the
//! supervisor that wires them can both use it without importing each other. The
//! supervisor's own two-phase shutdown (soft, then hard after the grace) stays there.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// For single-phase daemons (`highway gc`, `highway scheduler`): the first SIGTERM or
/// SIGINT cancels `stop` (they finish the pass in progress, then exit).
pub fn stop_on_signal(stop: CancellationToken, tracker: &TaskTracker, what: &'static str) {
    tracker.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            warn!(service = what, "cannot install signal handlers; stopping");
            stop.cancel();
            return;
        };
        tokio::select! {
            _ = term.recv() => info!(service = what, signal = "SIGTERM", "stopping after the pass in progress"),
            _ = int.recv() => info!(service = what, signal = "SIGINT", "stopping after the pass in progress"),
            _ = stop.cancelled() => {}
        }
        stop.cancel();
    });
}
