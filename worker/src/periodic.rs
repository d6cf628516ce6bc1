//! Background passes and last writes under a stop: [`pass_or_stop`] runs one pass of a
//! periodic service (rescuer, collector, sweeper, scheduler, artifact retention) to its
//! end unless it overstays [`PASS_GRACE_AT_STOP`] after the stop; [`finish_within`] is
//! the same rule with any grace. A ground-floor module (it imports nothing of the
//! crate), so services at every floor use it without importing the executor.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a background pass in progress may still run once its service is told to
/// stop: plenty for a healthy database (passes are short transactions), and a pass
/// stuck on a dead connection is then abandoned instead of holding up the shutdown.
pub const PASS_GRACE_AT_STOP: Duration = Duration::from_secs(3);

/// A background pass (rescuer, collector, sweeper, scheduler): run to its end, or
/// dropped `PASS_GRACE_AT_STOP` after `stop` fires (`None`). Dropping one is as safe as
/// a crash: the next pass of any worker finishes its work.
pub async fn pass_or_stop<T>(
    stop: &CancellationToken,
    pass: impl std::future::Future<Output = T>,
) -> Option<T> {
    finish_within(stop, PASS_GRACE_AT_STOP, pass).await
}

/// Runs `work` to its end, unless `stop` fires and `work` then takes more than `grace`:
/// `None` (the future is dropped). For passes and writes that must not hold up a stop.
pub async fn finish_within<T>(
    stop: &CancellationToken,
    grace: Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        r = &mut work => Some(r),
        () = stop.cancelled() => tokio::time::timeout(grace, work).await.ok(),
    }
}
