//! `netapi-chat`: starts the chat server (configuration: `NETAPI_CHAT_*` variables, see
//! `config.rs` and the README).

use netapi_chat::config::Config;
use std::io::Write as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netapi-chat: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let netapi_chat::server::Started {
        server,
        notice,
        store,
        ..
    } = match netapi_chat::server::start(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netapi-chat: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    println!(
        "netapi-chat listening on http://{addr} (API under /v1/chat/{{userId}}, OpenAPI at http://{addr}/openapi.json)"
    );
    if let Some(notice) = notice {
        // Stdout may be closed (e.g. a supervisor that read the first line): not fatal.
        let _ = writeln!(std::io::stdout(), "{notice}");
    }
    let mut server = server;
    let signal = tokio::select! {
        r = &mut server => {
            if let Err(e) = r {
                eprintln!("netapi-chat: server stopped: {e}");
                return std::process::ExitCode::FAILURE;
            }
            return std::process::ExitCode::SUCCESS;
        }
        s = stop_signal() => s,
    };
    match signal {
        Ok(name) => shutdown(name, server, store, config.connections.shutdown_grace).await,
        Err(e) => {
            eprintln!("netapi-chat: cannot listen for stop signals: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM (what service managers send) or SIGINT (Ctrl-C); returns its name.
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// The graceful stop: stop accepting (new connections are refused), answer the requests in
/// flight (at most `grace`: past it they are dropped, and what they committed is kept), close
/// the store once nothing can wait for a commit any more (every queued batch committed, the
/// database closed), one line on stdout, exit 0. Delivery stops first: no new attempt, and
/// attempts under way get what is left of the grace period to finish and forget their
/// notification; what is not delivered stays in the outbox for the restart (same `webhook-id`).
async fn shutdown(
    signal: &str,
    server: dropshot::HttpServer<netapi_chat::handlers::ChatServer>,
    store: netapi_chat::store::Store,
    grace: std::time::Duration,
) -> std::process::ExitCode {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + grace;
    let drained = tokio::time::timeout_at(deadline, server.close()).await;
    let outcome = match drained {
        Ok(Ok(())) => "requests in flight answered".to_owned(),
        Ok(Err(e)) => format!("server error while draining: {e}"),
        Err(_) => format!(
            "grace period of {:.1} s over, requests still in flight dropped",
            grace.as_secs_f64()
        ),
    };
    netapi_chat::notify::stop_deliveries(deadline).await;
    // Blocking (joins the store thread): off the async workers.
    let closed = tokio::task::spawn_blocking(move || store.close()).await;
    let store_state = if closed.is_ok() {
        "store closed"
    } else {
        "store thread did not stop cleanly"
    };
    let _ = writeln!(
        std::io::stdout(),
        "netapi-chat: {signal}: stopped in {:.2} s ({outcome}; {store_state})",
        started.elapsed().as_secs_f64()
    );
    std::process::ExitCode::SUCCESS
}
