//! The baseline: a minimal hyper server on loopback that reads a JSON body (parsed with
//! serde_json) and answers 201 with a `Location` and a small JSON body — what one POST costs on
//! this machine with nothing of the chat server's work. It runs as its own process (this
//! binary, `bench --serve-baseline`), on a multi-thread tokio runtime like netapi-chat's.

use super::chat::{Format, path, user};
use super::http::request;
use super::listen::message_text;
use super::load::MakeRequest;
use anyhow::{Context, Result};
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// The server gives up by itself after this long.
const MAX_LIFETIME: Duration = Duration::from_secs(3 * 3600);

/// The answer body, about the size of netapi-chat's `resourceReference`.
const ANSWER: &str = r#"{"resourceReference":{"resourceURL":"http://127.0.0.1:1/v1/chat/tel%3A%2B15550000001/chatSessions/sess-1-00000000000000000000000000000000/messages/msg-00000000000000000000000000000000"}}"#;

/// Serves until stdin closes (the harness exited) or [`MAX_LIFETIME`] passes.
pub fn serve() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("baseline listening on http://{}", socket.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            // Returns 0 (EOF) when the harness closes the pipe or dies.
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            let _ = stop_tx.send(());
        });
        let accept = async {
            while let Ok((stream, _)) = socket.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let valid = body
                            .as_ref()
                            .is_ok_and(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok());
                        if valid {
                            hyper::Response::builder()
                                .status(201)
                                .header("content-type", "application/json")
                                .header(
                                    "location",
                                    "http://127.0.0.1:1/v1/chat/x/chatSessions/s/messages/m",
                                )
                                .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                        } else {
                            hyper::Response::builder()
                                .status(400)
                                .body(Full::new(Bytes::new()))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stop_rx => {}
            _ = tokio::time::sleep(MAX_LIFETIME) => {}
        }
        Ok(())
    })
}

/// Starts the baseline server process (this binary).
pub fn start() -> Result<super::proc::Server> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "--serve-baseline"]);
    super::proc::Server::start(cmd, Duration::from_secs(10))
}

/// The same JSON message body and headers netapi-chat gets, POSTed to a chat-like path; no
/// notifications.
pub fn make_request(text_len: usize) -> MakeRequest {
    let target = path(&user(0), "/chatSessions/sess-1-0123456789abcdef/messages");
    Arc::new(move |step, seq| {
        let body = Format::Json.chat_message(&message_text(step, seq, text_len));
        let req = request(
            Method::POST,
            &target,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
                ("authorization", super::proc::AUTHORIZATION),
            ],
            body,
        )?;
        Ok((req, 0))
    })
}
