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
    let netapi_chat::server::Started { server, notice, .. } =
        match netapi_chat::server::start(&config) {
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
    tokio::select! {
        r = server => {
            if let Err(e) = r {
                eprintln!("netapi-chat: server stopped: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        _ = tokio::signal::ctrl_c() => {
            let _ = writeln!(std::io::stdout(), "netapi-chat: shutting down");
        }
    }
    std::process::ExitCode::SUCCESS
}
