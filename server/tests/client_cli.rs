//! The client CLI (issue 17 item 6), black box: the real `netapi-chat client …` commands
//! against the real server, with `netapi-chat client listen` as both users' callback
//! listeners, verifying signatures. A 1-1 chat end to end in each face (every command with
//! `--format json`, then with `--format xml`), and the exit statuses of failures.

mod support;

use netapi_chat_api as api;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::{self, Document};
use netapi_chat_runtime::xml::XmlLimits;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use support::{APP_TOKEN, Server, user_token};

const ALICE: &str = "tel:+15551230001";
const BOB: &str = "sip:bob@example.com";
/// Each application's signing secret, chosen by the client (base64 of 29 and 32 bytes).
const ALICE_SECRET: &str = "whsec_YWxpY2UncyBhcHBsaWNhdGlvbiBzZWNyZXQgMDE=";
const BOB_SECRET: &str = "whsec_Ym9iJ3MgYXBwbGljYXRpb24gc2VjcmV0IG51bWJlciAwMg==";
/// Longest wait for a notification to be printed (a deadline, not an assertion on speed).
const PATIENCE: Duration = Duration::from_secs(30);

/// The binary under test.
fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netapi-chat"));
    for var in ["NETAPI_CHAT_URL", "NETAPI_CHAT_TOKEN", "NETAPI_CHAT_USER"] {
        cmd.env_remove(var);
    }
    cmd
}

/// `netapi-chat client ARGS` against `server` with the application token (from the
/// environment, as a user would set it).
fn client(server: &Server, args: &[&str]) -> Output {
    client_as(server, APP_TOKEN, args)
}

/// `netapi-chat client ARGS` against `server` with `token`.
fn client_as(server: &Server, token: &str, args: &[&str]) -> Output {
    binary()
        .arg("client")
        .args(args)
        .env("NETAPI_CHAT_URL", &server.base)
        .env("NETAPI_CHAT_TOKEN", token)
        .output()
        .expect("run netapi-chat client")
}

/// Like [`client`], with one more variable in the environment.
fn client_and_env(server: &Server, args: &[&str], (name, value): (&str, &str)) -> Output {
    binary()
        .arg("client")
        .args(args)
        .env("NETAPI_CHAT_URL", &server.base)
        .env("NETAPI_CHAT_TOKEN", APP_TOKEN)
        .env(name, value)
        .output()
        .expect("run netapi-chat client")
}

/// Like [`client`], and the command must succeed: its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    ok_as(server, APP_TOKEN, args)
}

/// Like [`client_as`], and the command must succeed: its stdout.
fn ok_as(server: &Server, token: &str, args: &[&str]) -> String {
    let out = client_as(server, token, args);
    assert!(
        out.status.success(),
        "netapi-chat client {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Decodes a printed answer as the document `T` in `format` (indented, it is still the
/// document).
fn decode<T: Document>(format: Format, printed: &str) -> T {
    wire::decode::<T>(format, printed.as_bytes(), &XmlLimits::default())
        .unwrap_or_else(|e| panic!("not a {}: {e}\n{printed}", T::NAME))
}

/// `netapi-chat client listen 0 --secret SECRET`, its stdout collected line by line.
struct CliListener {
    url: String,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    child: Child,
}

impl CliListener {
    fn start(secret: &str) -> CliListener {
        let mut child = binary()
            .args(["client", "listen", "0", "--secret", secret])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start netapi-chat client listen");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        reader.read_line(&mut first).expect("first line");
        assert!(
            first.starts_with("listening for notifications on http://")
                && first.contains("verifying signatures with 1 secret(s)"),
            "{first:?}"
        );
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("the listener's URL")
            .to_owned();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let (list, arrived) = &*shared;
                list.lock().unwrap().push(line);
                arrived.notify_all();
            }
        });
        CliListener { url, lines, child }
    }

    /// The deliveries printed so far: each from one `--- ` line to the next.
    fn deliveries(lines: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for line in lines {
            if line.starts_with("--- ") {
                out.push(String::new());
            }
            if let Some(last) = out.last_mut() {
                last.push_str(line);
                last.push('\n');
            }
        }
        out
    }

    /// Waits until one printed delivery holds every word of `words`; returns it.
    fn expect(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        let (list, arrived) = &*self.lines;
        let mut lines = list.lock().unwrap();
        loop {
            if let Some(found) = Self::deliveries(&lines)
                .into_iter()
                .find(|d| words.iter().all(|w| d.contains(w)))
            {
                return found;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no delivery with {words:?} at {}; printed:\n{}",
                self.url,
                lines.join("\n")
            );
            lines = arrived.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

impl Drop for CliListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's chat, every command in `face`: alice (JSON notifications) starts a 1-1 chat
/// with bob (XML notifications), bob accepts, alice sends asking for a report, bob confirms,
/// alice ends; each notification arrives at the right CLI listener, signature verified.
fn one_to_one_chat(face: &str, format: Format) {
    let server = Server::default_for_tests();
    let alice = CliListener::start(ALICE_SECRET);
    let bob = CliListener::start(BOB_SECRET);
    let f = ["--format", face];

    let printed = ok(
        &server,
        &[
            &f[..],
            &["--user", ALICE, "subscribe", &alice.url],
            &[
                "--callback-data",
                "alice-app",
                "--signing-secret",
                ALICE_SECRET,
            ],
        ]
        .concat(),
    );
    let sub: api::ChatSubscription = decode(format, &printed);
    assert_eq!(sub.callback_reference.notify_url, alice.url);
    // Printed in the spec's property order, as the server wrote it (not the generated
    // client's alphabetical one).
    let at = |key: &str| printed.find(key).unwrap_or(usize::MAX);
    assert!(
        at("notifyURL") < at("callbackData") && at("callbackReference") < at("duration"),
        "{printed}"
    );
    assert_eq!(sub.signing_secret.as_deref(), Some(ALICE_SECRET));
    let printed = ok(
        &server,
        &[
            &f[..],
            &[
                "--user",
                BOB,
                "subscribe",
                &bob.url,
                "--callback-data",
                "bob-app",
            ],
            &[
                "--notification-format",
                "xml",
                "--signing-secret",
                BOB_SECRET,
            ],
        ]
        .concat(),
    );
    let sub: api::ChatSubscription = decode(format, &printed);
    assert_eq!(
        sub.callback_reference.notification_format,
        Some(api::NotificationFormat::Xml)
    );

    let sid = ok(
        &server,
        &[
            &f[..],
            &["--user", ALICE, "--id", "start", BOB, "--subject", "lunch?"],
        ]
        .concat(),
    );
    let sid = sid.trim();
    assert!(!sid.is_empty() && !sid.contains('/'), "{sid:?}");
    let invitation = bob.expect(&["sessionInvitationNotification", "lunch?", sid]);
    assert!(
        invitation.contains("(application/xml") && invitation.contains("signature verified"),
        "{invitation}"
    );

    let printed = ok(&server, &[&f[..], &["--user", BOB, "accept", sid]].concat());
    let status: api::ParticipantSessionStatus = decode(format, &printed);
    assert_eq!(status.status, api::ParticipantStatus::Connected);
    let connected = alice.expect(&["participantStatusNotification", "Connected", BOB]);
    assert!(
        connected.contains("(application/json") && connected.contains("signature verified"),
        "{connected}"
    );

    let printed = ok(
        &server,
        &[&f[..], &["--user", BOB, "list", "sessions"]].concat(),
    );
    let sessions: api::ChatSessionList = decode(format, &printed);
    assert!(
        sessions
            .chat_session_information
            .iter()
            .any(|s| s.resource_url.as_deref().is_some_and(|u| u.ends_with(sid))),
        "{printed}"
    );

    let mid = ok(
        &server,
        &[
            &f[..],
            &["--user", ALICE, "--id", "send", sid, "12:30?", "--report"],
        ]
        .concat(),
    );
    let mid = mid.trim();
    let message = bob.expect(&["messageNotification", "12:30?", mid]);
    assert!(message.contains("signature verified"), "{message}");

    let printed = ok(
        &server,
        &[&f[..], &["--user", BOB, "confirm", sid, mid]].concat(),
    );
    assert_eq!(printed, "", "a 204 prints nothing");
    let report = alice.expect(&["messageDeliveryNotification", "Delivered", mid]);
    assert!(report.contains("signature verified"), "{report}");

    let printed = ok(
        &server,
        &[&f[..], &["--user", ALICE, "list", "messages", sid]].concat(),
    );
    let messages: api::ChatMessageList = decode(format, &printed);
    assert_eq!(messages.chat_message.len(), 1, "{printed}");
    assert_eq!(messages.chat_message[0].text, "12:30?");
    let printed = ok(
        &server,
        &[&f[..], &["--user", ALICE, "list", "participants", sid]].concat(),
    );
    let participants: api::ParticipantList = decode(format, &printed);
    assert_eq!(participants.participant.len(), 2, "{printed}");

    ok(&server, &[&f[..], &["--user", ALICE, "end", sid]].concat());
    for listener in [&bob, &alice] {
        let ended = listener.expect(&["chatEventNotification", "SessionEnded", sid]);
        assert!(ended.contains("signature verified"), "{ended}");
    }
}

#[test]
fn a_one_to_one_chat_in_json() {
    one_to_one_chat("json", Format::Json);
}

#[test]
fn a_one_to_one_chat_in_xml() {
    one_to_one_chat("xml", Format::Xml);
}

/// A refused request exits 1 with the OMA requestError's text on stderr, in both faces;
/// a bad command line exits 2 and an unreachable server 3.
#[test]
fn failures_have_their_exit_status_and_the_oma_text() {
    let server = Server::default_for_tests();
    for face in ["json", "xml"] {
        let out = client(
            &server,
            &[
                "--format",
                face,
                "--user",
                ALICE,
                "accept",
                "no-such-session",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{face}: {stderr}");
        assert!(out.stdout.is_empty(), "{face}");
        assert!(
            stderr.starts_with("netapi-chat client: 404 SVC2008: Resource ")
                && stderr.contains("no-such-session")
                && stderr.trim_end().ends_with("does not exist"),
            "{face}: {stderr}"
        );
        let out = client(
            &server,
            &[
                "--format",
                face,
                "--user",
                ALICE,
                "start",
                "mailto:bob@example.com",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{face}: {stderr}");
        assert!(stderr.contains(": 400 SVC"), "{face}: {stderr}");
    }
    let out = binary()
        .args(["client", "--server", &server.base, "--token", "not-a-token"])
        .args(["list", "sessions"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(": 401 SVC2003"), "{stderr}");

    let out = binary()
        .args(["client", "--server", &server.base, "list", "sessions"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no token"), "{stderr}");

    // A port nothing listens on: the server's own, once it is gone.
    let base = server.base.clone();
    drop(server);
    let out = binary()
        .args(["client", "--server", &base, "--token", APP_TOKEN])
        .args(["list", "sessions"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What is not the chat API answering (a proxy's HTML page, another service's XML or JSON
/// error) exits 3, "no usable answer", whatever its status, in either face; and a `--server`
/// that is no base URL (no scheme, user info, a query) or an empty `--user` is a bad command
/// line, exit 2, nothing sent. Before, an XML face printed such a `200` as the answer, exit
/// 0, a foreign error was "refused", exit 1, and a bad URL "cannot be reached", exit 3 (an
/// outside review).
#[test]
fn what_is_not_the_api_answering_exits_3_and_a_bad_server_url_2() {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let answers = [
        "200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>hello</body></html>",
        "200 OK\r\nContent-Type: application/xml\r\n\r\n<foo/>",
        "200 OK\r\nContent-Type: application/json\r\n\r\n{\"error\":\"nope\"}",
        "500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nboom",
    ];
    let serving = std::thread::spawn(move || {
        for answer in answers.iter().cycle().take(answers.len() * 2) {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let (head, body) = answer.split_once("\r\n\r\n").expect("answer");
            let _ = write!(
                s,
                "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    for format in ["xml", "json"] {
        for _ in answers {
            let out = binary()
                .args(["client", "--server", &base, "--token", APP_TOKEN])
                .args(["--user", ALICE, "--format", format, "list", "sessions"])
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{format}: {stderr}");
            assert!(
                out.stdout.is_empty(),
                "{format}: nothing printed as an answer"
            );
            assert!(!stderr.contains("b\""), "no Rust bytes in {stderr}");
        }
    }
    let _ = serving.join();
    for (flag, value, said) in [
        ("--server", "127.0.0.1:8080", "not a URL"),
        ("--server", "http://u:secretpw@127.0.0.1:10", "user info"),
        ("--server", "http://127.0.0.1:10?x=1", "no query"),
        ("--user", "", "--user is empty"),
    ] {
        let out = binary()
            .args([
                "client", "--token", APP_TOKEN, flag, value, "list", "sessions",
            ])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(!stderr.contains("secretpw"), "{stderr}");
    }
}

/// `--id` with a command that creates nothing is a bad command line, refused (exit 2) before
/// anything is sent: it sent the request (an `unsubscribe` was done), then exited 3 as if the
/// answer were wrong.
#[test]
fn id_with_a_command_that_creates_nothing_is_a_bad_command_line() {
    let server = Server::default_for_tests();
    let sub = ok(
        &server,
        &["--user", ALICE, "--id", "subscribe", "http://127.0.0.1:10/"],
    );
    let sub = sub.trim();
    for args in [
        &["--id", "list", "sessions"][..],
        &["--id", "unsubscribe", sub],
        &["unsubscribe", sub, "--id"],
        &["--id", "listen", "0"],
    ] {
        let out = client(&server, &[&["--user", ALICE][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            stderr.trim_end(),
            "netapi-chat client: --id prints the id of a created resource: only subscribe, \
             start and send create one",
            "{args:?}"
        );
    }
    // Nothing was sent: the subscription is still there.
    let printed = ok(&server, &["--user", ALICE, "get", "subscription", sub]);
    let still: api::ChatSubscription = decode(Format::Json, &printed);
    assert!(
        still.resource_url.is_some_and(|u| u.ends_with(sub)),
        "{printed}"
    );
}

/// `--config` is refused by the client (exit 2): it read no configuration file, so it called
/// its default URL instead of the file's server. `NETAPI_CHAT_CONFIG`, set for the server in
/// an operator's environment, is ignored.
#[test]
fn the_client_refuses_a_configuration_file() {
    let server = Server::default_for_tests();
    let file = std::env::temp_dir().join(format!("netapi-chat-client-{}.toml", std::process::id()));
    std::fs::write(&file, format!("bind = \"{}\"\n", server.addr())).expect("write the file");
    let file = file.to_str().expect("UTF-8 temp path");
    for args in [
        &["--config", file, "client", "list", "sessions"][..],
        &["client", "--config", file, "list", "sessions"],
    ] {
        let out = binary()
            .args(args)
            .env("NETAPI_CHAT_TOKEN", APP_TOKEN)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.starts_with(
                "netapi-chat client: --config: the client reads no configuration file"
            ) && stderr.contains("--server"),
            "{args:?}: {stderr}"
        );
    }
    let out = client_and_env(
        &server,
        &["--user", ALICE, "list", "sessions"],
        ("NETAPI_CHAT_CONFIG", file),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(file);
}

/// The CLI listener refuses a notification signed with another secret: printed as refused,
/// answered 401 (so the server keeps it for a retry instead of counting it delivered).
#[test]
fn the_listener_refuses_a_signature_it_cannot_verify() {
    let server = Server::default_for_tests();
    let listener = CliListener::start(BOB_SECRET);
    ok(
        &server,
        &[
            "--user",
            ALICE,
            "subscribe",
            &listener.url,
            "--signing-secret",
            ALICE_SECRET,
        ],
    );
    ok(&server, &["--user", BOB, "start", ALICE]);
    let refused = listener.expect(&["sessionInvitationNotification", "SIGNATURE REFUSED"]);
    assert!(refused.contains("answered 401"), "{refused}");
}

/// The status of `who` in a printed participant list.
fn status_of(format: Format, printed: &str, who: &str) -> Option<api::ParticipantStatus> {
    let list: api::ParticipantList = decode(format, printed);
    list.participant
        .iter()
        .find(|p| p.address == who)
        .and_then(|p| p.status)
}

/// The commands the walkthrough does not use, in each face: a group chat (invite), decline,
/// leave and re-join, cancel, unsubscribe; each changes what the server then lists.
#[test]
fn group_chat_commands_in_both_faces() {
    const CAROL: &str = "sip:carol@example.com";
    const DAVE: &str = "sip:dave@example.com";
    let server = Server::default_for_tests();
    for (face, format) in [("json", Format::Json), ("xml", Format::Xml)] {
        let f = ["--format", face];
        let run = |args: &[&str]| ok(&server, &[&f[..], args].concat());
        let sid = run(&["--user", ALICE, "--id", "start", BOB]);
        let sid = sid.trim();
        let printed = run(&["--user", ALICE, "invite", sid, CAROL, DAVE]);
        for invitee in [CAROL, DAVE] {
            assert_eq!(
                status_of(format, &printed, invitee),
                Some(api::ParticipantStatus::Invited),
                "{face}: {printed}"
            );
        }
        run(&["--user", BOB, "accept", sid]);
        run(&["--user", CAROL, "accept", sid]);
        run(&["--user", ALICE, "cancel", sid, DAVE]);
        let listed = run(&["--user", ALICE, "list", "participants", sid]);
        assert_eq!(
            status_of(format, &listed, BOB),
            Some(api::ParticipantStatus::Connected),
            "{face}: {listed}"
        );
        assert!(
            status_of(format, &listed, DAVE) != Some(api::ParticipantStatus::Invited),
            "{face}: a cancelled invitation is not pending: {listed}"
        );

        run(&["--user", BOB, "leave", sid]);
        let listed = run(&["--user", ALICE, "list", "participants", sid]);
        assert_eq!(
            status_of(format, &listed, BOB),
            Some(api::ParticipantStatus::Disconnected),
            "{face}: {listed}"
        );
        run(&["--user", BOB, "rejoin", sid]);
        let listed = run(&["--user", ALICE, "list", "participants", sid]);
        assert_eq!(
            status_of(format, &listed, BOB),
            Some(api::ParticipantStatus::Connected),
            "{face}: {listed}"
        );

        let other = run(&["--user", ALICE, "--id", "start", CAROL]);
        run(&["--user", CAROL, "decline", other.trim()]);
        let out = client(
            &server,
            &[&f[..], &["--user", CAROL, "accept", other.trim()]].concat(),
        );
        assert_eq!(out.status.code(), Some(1), "{face}: declined is gone");

        let sub = run(&["--user", DAVE, "--id", "subscribe", "http://127.0.0.1:10/"]);
        let printed = run(&["--user", DAVE, "list", "subscriptions"]);
        assert!(printed.contains(sub.trim()), "{face}: {printed}");
        run(&["--user", DAVE, "unsubscribe", sub.trim()]);
        let printed = run(&["--user", DAVE, "list", "subscriptions"]);
        assert!(!printed.contains(sub.trim()), "{face}: {printed}");
    }
}

/// `get` of each single resource, in each face, read back as the document the server
/// answers; and a user's own token with the default `--user acr:auth`: accept, leave,
/// re-join, decline and `get participant` without an address work out the user's address
/// from the session the server shows it. A token that names no user cannot use `acr:auth`.
#[test]
fn get_and_acting_as_the_tokens_own_user_in_both_faces() {
    let server = Server::default_for_tests();
    let bob = user_token(BOB);
    for (face, format) in [("json", Format::Json), ("xml", Format::Xml)] {
        let f = ["--format", face];
        let alice = |args: &[&str]| ok(&server, &[&f[..], &["--user", ALICE], args].concat());
        // Bob's own token, no --user: acr:auth.
        let as_bob = |args: &[&str]| ok_as(&server, &bob, &[&f[..], args].concat());

        let sub = alice(&["--id", "subscribe", "http://127.0.0.1:10/"]);
        let sub = sub.trim();
        let printed = alice(&["get", "subscription", sub]);
        let got: api::ChatSubscription = decode(format, &printed);
        assert_eq!(got.callback_reference.notify_url, "http://127.0.0.1:10/");
        assert!(
            got.resource_url
                .as_deref()
                .is_some_and(|u| u.ends_with(sub)),
            "{face}: {printed}"
        );

        let sid = alice(&["--id", "start", BOB, "--subject", "get"]);
        let sid = sid.trim();
        let printed = as_bob(&["accept", sid]);
        let status: api::ParticipantSessionStatus = decode(format, &printed);
        assert_eq!(status.status, api::ParticipantStatus::Connected, "{face}");

        let printed = alice(&["get", "session", sid]);
        let session: api::ChatSessionInformation = decode(format, &printed);
        assert_eq!(session.subject.as_deref(), Some("get"), "{face}: {printed}");
        assert!(
            session.participant.iter().any(|p| p.address == BOB),
            "{face}: {printed}"
        );
        let printed = alice(&["get", "participant", sid, BOB]);
        let participant: api::ParticipantInformation = decode(format, &printed);
        assert_eq!(participant.address, BOB, "{face}");
        assert_eq!(
            participant.status,
            Some(api::ParticipantStatus::Connected),
            "{face}: {printed}"
        );
        let printed = as_bob(&["get", "participant", sid]);
        let me: api::ParticipantInformation = decode(format, &printed);
        assert_eq!(me.address, BOB, "{face}: acr:auth is bob: {printed}");

        let mid = alice(&["--id", "send", sid, "read me"]);
        let mid = mid.trim();
        let printed = alice(&["get", "message", sid, mid]);
        let message: api::ChatMessage = decode(format, &printed);
        assert_eq!(message.text, "read me", "{face}");
        assert_eq!(message.sender_address.as_deref(), Some(ALICE), "{face}");
        let read_status = |printed: &str| -> api::MessageStatus {
            decode::<api::MessageDeliveryStatus>(format, printed).status
        };
        let before = read_status(&alice(&["get", "message-status", sid, mid]));
        assert_ne!(before, api::MessageStatus::Displayed, "{face}");
        as_bob(&["confirm", sid, mid, "--status", "displayed"]);
        let after = read_status(&alice(&["get", "message-status", sid, mid]));
        assert_eq!(after, api::MessageStatus::Displayed, "{face}");
        assert_eq!(
            read_status(&as_bob(&["get", "message-status", sid, mid])),
            api::MessageStatus::Displayed,
            "{face}: the recipient reads its own"
        );

        let own_status = |printed: &str| -> api::ParticipantStatus {
            decode::<api::ParticipantSessionStatus>(format, printed).status
        };
        as_bob(&["leave", sid]);
        assert_eq!(
            own_status(&alice(&["get", "participant-status", sid, BOB])),
            api::ParticipantStatus::Disconnected,
            "{face}"
        );
        as_bob(&["rejoin", sid]);
        assert_eq!(
            own_status(&as_bob(&["get", "participant-status", sid])),
            api::ParticipantStatus::Connected,
            "{face}"
        );
        let other = alice(&["--id", "start", BOB]);
        let printed = as_bob(&["decline", other.trim()]);
        assert_eq!(
            own_status(&printed),
            api::ParticipantStatus::Disconnected,
            "{face}"
        );

        // The application token acts for anyone, so acr:auth names nobody: refused.
        let out = client(&server, &[&f[..], &["accept", sid]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{face}: {stderr}");
        assert!(stderr.contains(": 403 POL"), "{face}: {stderr}");
    }
}

/// A subscription whose callback never answers is disabled at the backlog cap; `list
/// dead-letters` shows what it missed (`--since` narrows it), `redeliver` re-enables it,
/// and `rotate-secret` gives it a new secret (the client's, or one the CLI makes) that a
/// listener verifying only the new secret then accepts; in each face.
#[test]
fn dead_letters_redelivery_and_secret_rotation_in_both_faces() {
    const CAP: usize = 2;
    let server = Server::start(&[
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,1h"),
        ("NETAPI_CHAT_DELIVERY_BACKLOG", "2"),
    ]);
    for (face, format, user) in [
        ("json", Format::Json, "sip:dead-json@example.com"),
        ("xml", Format::Xml, "sip:dead-xml@example.com"),
    ] {
        let f = ["--format", face];
        let run = |args: &[&str]| ok(&server, &[&f[..], args].concat());
        let sub = run(&[
            "--user",
            user,
            "--id",
            "subscribe",
            "http://127.0.0.1:10/",
            "--signing-secret",
            ALICE_SECRET,
        ]);
        let sub = sub.trim();
        let subscription = || -> api::ChatSubscription {
            decode(format, &run(&["--user", user, "get", "subscription", sub]))
        };
        let deadline = Instant::now() + PATIENCE;
        while subscription().subscription_status != Some(api::SubscriptionStatus::Disabled) {
            assert!(Instant::now() < deadline, "{face}: never disabled");
            run(&["--user", ALICE, "start", user]);
        }
        // The delivery task writes the dead letters right after it disabled the subscription.
        let dead = |extra: &[&str]| -> api::DeadLetterList {
            let args = [&["--user", user, "list", "dead-letters", sub][..], extra].concat();
            decode(format, &run(&args))
        };
        let all = loop {
            let all = dead(&[]);
            if all.dead_letter.len() == CAP {
                break all;
            }
            assert!(Instant::now() < deadline, "{face}: {all:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            all.dead_letter
                .iter()
                .all(|d| d.session_invitation_notification.is_some()),
            "{face}: {all:?}"
        );
        let later = dead(&["--since", &all.dead_letter[0].webhook_id]);
        assert_eq!(later.dead_letter, all.dead_letter[1..], "{face}");
        let page = dead(&["--max-entries", "1"]);
        assert_eq!(page.dead_letter, all.dead_letter[..1], "{face}");
        assert_eq!(page.link.len(), 1, "{face}: a next page");

        let printed = run(&["--user", user, "redeliver", sub]);
        let again: api::ChatSubscription = decode(format, &printed);
        assert_eq!(
            again.subscription_status,
            Some(api::SubscriptionStatus::Active),
            "{face}: {printed}"
        );
        assert!(dead(&[]).dead_letter.is_empty(), "{face}: requeued");

        let printed = run(&[
            "--user",
            user,
            "rotate-secret",
            sub,
            "--signing-secret",
            BOB_SECRET,
        ]);
        let rotated: api::SubscriptionSecret = decode(format, &printed);
        assert_eq!(rotated.signing_secret, BOB_SECRET, "{face}");
        assert!(
            rotated.previous_secret_expires.is_some(),
            "{face}: {printed}"
        );
        let printed = run(&["--user", user, "rotate-secret", sub]);
        let made: api::SubscriptionSecret = decode(format, &printed);
        assert!(
            made.signing_secret.starts_with("whsec_") && made.signing_secret != BOB_SECRET,
            "{face}: {printed}"
        );

        // What the rotated secret signs, a listener holding only it verifies.
        let listener = CliListener::start(BOB_SECRET);
        let listening = run(&[
            "--user",
            BOB,
            "--id",
            "subscribe",
            &listener.url,
            "--signing-secret",
            ALICE_SECRET,
        ]);
        run(&[
            "--user",
            BOB,
            "rotate-secret",
            listening.trim(),
            "--signing-secret",
            BOB_SECRET,
        ]);
        let sid = run(&["--user", ALICE, "--id", "start", BOB, "--subject", face]);
        let invitation = listener.expect(&[
            "sessionInvitationNotification",
            sid.trim(),
            "signature verified",
        ]);
        assert!(!invitation.contains("REFUSED"), "{face}: {invitation}");
        run(&["--user", BOB, "unsubscribe", listening.trim()]);
    }
}
