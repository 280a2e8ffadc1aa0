//! Waiting for what the server does in the background (a delivery, a retry, a purge): one
//! loop for every suite, so that each wait states only what it waits for and what it saw.

use std::time::{Duration, Instant};

/// Asks `probe` again every `every` until it answers `Ok`, for at most `bound`; past that,
/// fails with the last `Err`: what was seen instead. The bound only ends a test that would
/// hang; no test asserts how fast something happens.
pub async fn within<T>(
    bound: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + bound;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// [`within`] 20 s, the suites' usual bound.
pub async fn within_20s<T>(every: Duration, probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    within(Duration::from_secs(20), every, probe).await
}
