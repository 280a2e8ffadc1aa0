// Copyright 2026 netapi-chat contributors (patch to dropshot 0.18.0; see PATCHES.md).

//! Telling a request handler that its client has gone away.
//!
//! In `HandlerTaskMode::Detached` (the default) a handler runs to completion even when its
//! client disconnects, which is what most handlers want. A handler that waits for something to
//! hand out (a long poll) must instead stop waiting before it takes anything, or what it takes
//! is answered to nobody. [`client_gone`] resolves once the server has seen the request's
//! connection close before the answer: the server sets the signal from the same place that
//! logs "request handling cancelled (client disconnected)" (and reports status 499 to the
//! request observer), before either.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

tokio::task_local! {
    static CLIENT_GONE: Arc<ClientGone>;
}

/// The disconnect signal of one request.
#[derive(Debug, Default)]
pub(crate) struct ClientGone {
    gone: AtomicBool,
    bell: Notify,
}

impl ClientGone {
    pub(crate) fn new() -> Arc<ClientGone> {
        Arc::new(ClientGone::default())
    }

    /// The client went away before the answer.
    pub(crate) fn set(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.bell.notify_waiters();
    }

    /// Runs `fut` (a handler) with this signal as the one [`client_gone`] waits for.
    pub(crate) async fn scope<F: std::future::Future>(
        self: Arc<Self>,
        fut: F,
    ) -> F::Output {
        CLIENT_GONE.scope(self, fut).await
    }
}

/// Resolves when the client of the request this task is handling has gone away (its
/// connection closed before the answer was written); never resolves outside a request
/// handler run in `HandlerTaskMode::Detached` (in `CancelOnDisconnect` the handler is dropped
/// instead). Cancel-safe: use it in `tokio::select!` next to what the handler waits for.
pub async fn client_gone() {
    let Ok(signal) = CLIENT_GONE.try_with(Arc::clone) else {
        return std::future::pending().await;
    };
    loop {
        let rung = signal.bell.notified();
        tokio::pin!(rung);
        // Registered before looking, so a `set` between the look and the wait is not missed.
        rung.as_mut().enable();
        if signal.gone.load(Ordering::SeqCst) {
            return;
        }
        rung.await;
    }
}
