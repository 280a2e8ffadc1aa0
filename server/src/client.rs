//! `netapi-chat client …`: the API from a terminal, for application developers (issue 17
//! item 6), in the manner of `gh` and `stripe`: one subcommand per thing an application does
//! (subscribe, start, invite, accept, send, confirm, list, get, redeliver, rotate-secret, …)
//! and `listen`, a callback receiver that verifies signatures.
//!
//! *Where the wire comes from.* Nothing here spells a path or a document: the JSON face is the
//! generated progenitor client (`netapi-chat-client`); the XML face, which progenitor does not
//! speak, sends the generated API types encoded by `netapi_chat_runtime::wire` with the request
//! line (method and URL) of the generated request builders (`Requests`). A request document is
//! built once, as the API type, and handed to progenitor through its JSON form ([`to_client`]),
//! so both faces send the same document.
//!
//! *What it prints.* The answer document on stdout, indented (`netapi_chat_webhooks::pretty`;
//! nothing for a `204`), or with `--id` only the id of the created resource (the last
//! segment of `Location`; subscribe, start and send), for scripts. A refusal prints the OMA
//! `requestError` as one line on stderr, `STATUS MESSAGEID: text` with its variables filled
//! in, and exits [`EXIT_REFUSED`].
//!
//! *Why a subcommand of the server binary* rather than a `netapi-chat-cli` binary: one program
//! to install and to find in the README, next to the operator's `tokens`, `backup` and
//! `summary`; the client shares no configuration with the server (it reads only its own
//! options and `NETAPI_CHAT_URL` / `NETAPI_CHAT_TOKEN` / `NETAPI_CHAT_USER` /
//! `NETAPI_CHAT_CA_FILE`), so it runs on any machine, and a server configuration that does not
//! load does not stop it. `netapi-chat --config FILE client …` is refused (exit 2) rather than
//! calling the default URL while the operator expects the file's server.
//!
//! *HTTPS.* An `https://` server's certificate is verified for the URL's host against
//! Mozilla's roots plus the certificates of `--ca-file` (a private CA's, or the server's own
//! certificate: see [`crate::tls::command_client_config`]); see [`crate::reach`].

use clap::{Args, Subcommand, ValueEnum};
use netapi_chat_api as api;
use netapi_chat_api::{Requests, Urls};
use netapi_chat_client as generated;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::url::OperationRequest;
use netapi_chat_runtime::wire::{self, Document};
use progenitor_client::ResponseValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::num::NonZeroU64;
use std::time::Duration;

/// Exit status when the server refused the request (an OMA `requestError`).
pub const EXIT_REFUSED: u8 = 1;
/// Exit status of a command line that cannot be run (clap's usage errors use it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when no usable answer came: the server could not be reached, timed out, or
/// answered something that is not the API's; also a listener that cannot bind.
pub const EXIT_NO_ANSWER: u8 = 3;

/// The server's base URL.
pub const ENV_URL: &str = "NETAPI_CHAT_URL";
/// The bearer token.
pub const ENV_TOKEN: &str = "NETAPI_CHAT_TOKEN";
/// The user acted for.
pub const ENV_USER: &str = "NETAPI_CHAT_USER";
/// Certificates trusted for an `https://` server besides Mozilla's roots.
pub const ENV_CA_FILE: &str = "NETAPI_CHAT_CA_FILE";
/// The client's own environment variables. They are not server settings: the server reads
/// none of them, and the client reads none of the server's (`config`'s README test knows).
pub const ENV_VARIABLES: [&str; 4] = [ENV_URL, ENV_TOKEN, ENV_USER, ENV_CA_FILE];

/// Longest a request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest excerpt of an answer that is not a `requestError`, shown in the error line.
const EXCERPT_CHARS: usize = 200;

/// `netapi-chat client`: the options every operation shares, then the operation.
#[derive(Args, Debug)]
#[command(
    about = "Drive the chat API as an application: subscribe, start, invite, accept, send, \
             confirm, list, get, in JSON or XML; and listen for notifications",
    after_help = "Exit status: 0 done, 1 the server refused (its requestError on stderr), \
                  2 bad command line, 3 no usable answer (unreachable, timeout, not the API)."
)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = ENV_URL,
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// The bearer token (of the token file, or a JWT).
    #[arg(
        long,
        global = true,
        env = ENV_TOKEN,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The user the application acts for: a `tel:` or `sip:` address, or `acr:auth` for the
    /// token's own user (accept/decline/leave/rejoin then ask the server which address that
    /// is: one more request, a GET of the session).
    #[arg(
        long,
        global = true,
        env = ENV_USER,
        default_value = "acr:auth",
        value_name = "ADDRESS"
    )]
    pub user: String,
    /// PEM certificates trusted for an `https://` server besides Mozilla's roots: the
    /// certificate of the CA that issued the server's, or the server's own certificate (its
    /// NETAPI_CHAT_TLS_CERT file). The host name is verified either way.
    #[arg(long, global = true, env = ENV_CA_FILE, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// The face to use: request and answer documents in JSON or in XML.
    #[arg(long, global = true, value_enum, default_value_t = Face::Json)]
    pub format: Face,
    /// Print only the id of the created resource, for scripts: subscribe, start and send
    /// only (with any other command it is refused, nothing sent).
    #[arg(long, global = true)]
    pub id: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// `--format`: JSON or XML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Face {
    /// `application/json`, through the generated progenitor client.
    Json,
    /// `application/xml`, the generated types' XML encoding.
    Xml,
}

impl From<Face> for Format {
    fn from(face: Face) -> Format {
        match face {
            Face::Json => Format::Json,
            Face::Xml => Format::Xml,
        }
    }
}

/// The operations (seed section in brackets).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Subscribe to the user's chat notifications at a callback URL [7.1.1].
    Subscribe {
        /// Where notifications are POSTed (`notifyURL`).
        notify_url: String,
        /// Echoed in every notification (`callbackData`).
        #[arg(long)]
        callback_data: Option<String>,
        /// The notifications' format (JSON when absent).
        #[arg(long, value_enum)]
        notification_format: Option<Face>,
        /// Seconds until the subscription expires (absent or 0: never).
        #[arg(long)]
        duration: Option<i64>,
        /// The secret the notifications are signed with (`whsec_` + base64 of 24-64 bytes);
        /// when absent the server makes one and shows it in the answer, once.
        #[arg(long, value_name = "SECRET")]
        signing_secret: Option<String>,
        /// Makes a repeated request return the first one's subscription.
        #[arg(long)]
        client_correlator: Option<String>,
    },
    /// Delete a subscription [7.1.1].
    Unsubscribe {
        /// The subscription's id.
        subscription: String,
    },
    /// Start a chat: 1-1 with one participant, a group chat with several [7.1.2, 7.1.4].
    Start {
        /// The invitees' addresses.
        #[arg(required = true, value_name = "PARTICIPANT")]
        participants: Vec<String>,
        /// The chat's topic.
        #[arg(long)]
        subject: Option<String>,
        /// Makes a repeated request return the first one's session.
        #[arg(long)]
        client_correlator: Option<String>,
    },
    /// Invite more participants to a session (extend a 1-1 chat to a group) [7.1.3].
    Invite {
        /// The session's id.
        session: String,
        /// The invitees' addresses.
        #[arg(required = true, value_name = "PARTICIPANT")]
        participants: Vec<String>,
    },
    /// Accept an invitation: the user's status becomes Connected [7.1.7].
    Accept {
        /// The session's id.
        session: String,
    },
    /// Decline an invitation: the user's status becomes Disconnected [7.1.7].
    Decline {
        /// The session's id.
        session: String,
    },
    /// Leave a session the user is connected to (Disconnected) [7.1.8].
    Leave {
        /// The session's id.
        session: String,
    },
    /// Re-join a session the user left (Connected) [7.1.8].
    Rejoin {
        /// The session's id.
        session: String,
    },
    /// End a session for every participant [7.1.5].
    End {
        /// The session's id.
        session: String,
    },
    /// Cancel a pending invitation [7.1.6].
    Cancel {
        /// The session's id.
        session: String,
        /// The invitee whose invitation is cancelled.
        participant: String,
    },
    /// Send a message [7.1.9].
    Send {
        /// The session's id.
        session: String,
        /// The text.
        text: String,
        /// Ask for a delivery report (`successReport`): the sender is notified when the
        /// recipient confirms.
        #[arg(long)]
        report: bool,
        /// Makes a repeated request return the first one's message.
        #[arg(long)]
        client_correlator: Option<String>,
    },
    /// Confirm a received message as Delivered or Displayed [7.1.10].
    Confirm {
        /// The session's id.
        session: String,
        /// The message's id.
        message: String,
        /// The status confirmed.
        #[arg(long, value_enum, default_value_t = Confirmed::Delivered)]
        status: Confirmed,
    },
    /// List the user's subscriptions, sessions, or a session's messages or participants.
    List {
        /// What to list.
        #[command(subcommand)]
        what: ListWhat,
        /// The most entries of one page (1-1000; the server's default when absent).
        #[arg(long, global = true)]
        max_entries: Option<NonZeroU64>,
        /// Where the page starts: the cursor of the previous page's `next` link.
        #[arg(long, global = true)]
        cursor: Option<String>,
    },
    /// Read one resource: a subscription, a session, a participant (or its status), a
    /// message (or its delivery status).
    Get {
        /// What to read.
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Send a subscription's dead letters again, in order and with their `webhook-id`s, and
    /// re-enable it if it was disabled (extension; `list dead-letters` shows them).
    Redeliver {
        /// The subscription's id.
        subscription: String,
    },
    /// Give a subscription a new signing secret (extension); the previous one keeps signing
    /// too until the answer's `previousSecretExpires`.
    RotateSecret {
        /// The subscription's id.
        subscription: String,
        /// The new secret (`whsec_` + base64 of 24-64 bytes); when absent the client makes
        /// one (32 random bytes). Either way the answer shows it.
        #[arg(long, value_name = "SECRET")]
        signing_secret: Option<String>,
    },
    /// Receive notifications: a callback listener on 127.0.0.1:PORT that prints each one and
    /// answers 204, verifying its Standard Webhooks signature with the secrets given (one that
    /// does not verify is printed as refused and answered 401, so the server retries it).
    Listen {
        /// The port (0: a free one, printed on the first line).
        #[arg(default_value_t = 9000)]
        port: u16,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// A subscription's signing secret (`whsec_…`); repeat it for several subscriptions
        /// or during a rotation: any one verifying is enough.
        #[arg(long = "secret", value_name = "SECRET")]
        secrets: Vec<String>,
    },
}

/// What `list` lists.
#[derive(Subcommand, Debug)]
pub enum ListWhat {
    /// The user's subscriptions.
    Subscriptions,
    /// The user's open sessions.
    Sessions,
    /// A session's messages (oldest first).
    Messages {
        /// The session's id.
        session: String,
    },
    /// A session's participants.
    Participants {
        /// The session's id.
        session: String,
    },
    /// A subscription's dead letters: the notifications it could not be given (extension).
    DeadLetters {
        /// The subscription's id.
        subscription: String,
        /// Only those created at or after an RFC 3339 time (`2026-12-03T17:00:00Z`), or
        /// after a `webhook-id` (`msg_42`).
        #[arg(long, value_name = "TIME|WEBHOOK-ID")]
        since: Option<String>,
    },
}

/// What `get` reads.
#[derive(Subcommand, Debug)]
pub enum GetWhat {
    /// A subscription of the user.
    Subscription {
        /// The subscription's id.
        subscription: String,
    },
    /// A session the user takes part in.
    Session {
        /// The session's id.
        session: String,
    },
    /// A participant of a session (the user itself when no address is given).
    Participant {
        /// The session's id.
        session: String,
        /// The participant's address; the acting user's when absent.
        participant: Option<String>,
    },
    /// A participant's status in a session (the user's own when no address is given).
    ParticipantStatus {
        /// The session's id.
        session: String,
        /// The participant's address; the acting user's when absent.
        participant: Option<String>,
    },
    /// A message of a session.
    Message {
        /// The session's id.
        session: String,
        /// The message's id.
        message: String,
    },
    /// A message's delivery status.
    MessageStatus {
        /// The session's id.
        session: String,
        /// The message's id.
        message: String,
    },
}

/// `confirm --status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Confirmed {
    /// The message reached the user's device.
    Delivered,
    /// The user saw it.
    Displayed,
}

/// Why a command failed; each has its exit status ([`Failure::exit_status`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an error: `STATUS MESSAGEID: text` (or the status and an
    /// excerpt of a body that is not a `requestError`).
    Refused(String),
    /// The command cannot be run as given.
    Usage(String),
    /// No usable answer.
    NoAnswer(String),
}

impl Failure {
    /// The process exit status for it.
    pub fn exit_status(&self) -> u8 {
        match self {
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::NoAnswer(_) => EXIT_NO_ANSWER,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(text) | Failure::Usage(text) | Failure::NoAnswer(text) => {
                f.write_str(text)
            }
        }
    }
}

/// A successful answer: its `Location` and its document, as text to print.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The `Location` header of a `201`.
    pub location: Option<String>,
    /// The document, indented; `None` for an answer without one.
    pub document: Option<String>,
}

impl Answer {
    /// What the command prints: the document, or with `id` the created resource's id.
    pub fn output(self, id: bool) -> Result<String, Failure> {
        if id {
            let location = self.location.ok_or_else(|| {
                Failure::NoAnswer(
                    "--id: the answer has no Location (the server did not say what it created)"
                        .to_owned(),
                )
            })?;
            return Ok(format!("{}\n", last_segment(&location)));
        }
        Ok(self
            .document
            .map(|d| format!("{}\n", d.trim_end()))
            .unwrap_or_default())
    }
}

/// The last path segment of a URL, percent-decoded: the id of the resource it names.
pub fn last_segment(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let segment = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// One line for a refusal: `STATUS MESSAGEID: text` from the `requestError` in `body` (read
/// in `format`), or the status and an excerpt when the body is not one.
pub fn refusal(status: u16, format: Format, body: &[u8]) -> String {
    let limits = netapi_chat_runtime::xml::XmlLimits::default();
    if let Ok(error) = wire::decode::<api::RequestError>(format, body, &limits)
        && let Some(exception) = error.service_exception.or(error.policy_exception)
    {
        let text =
            netapi_chat_runtime::error::fill_variables(&exception.text, &exception.variables);
        return format!("{status} {}: {text}", exception.message_id);
    }
    let excerpt = excerpt(body);
    if excerpt.is_empty() {
        format!("{status} (no body)")
    } else {
        format!("{status}: {excerpt}")
    }
}

/// The start of an answer that is not a document of the API, for an error line: its text,
/// trimmed, at most `EXCERPT_CHARS` characters (bytes that are not UTF-8 shown as `\u{FFFD}`).
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

/// The rule on `--server`: an `http` or `https` URL with a host, and neither user info (it
/// would be sent as a Basic credential in place of the token, and printed in messages) nor a
/// query or fragment (glued before every path); a path is kept as a prefix (a reverse proxy's).
/// The base without a trailing `/`, or why not (a usage error, exit 2: before, a malformed one
/// was reported as a server that cannot be reached, exit 3; an outside review).
fn server_base(given: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(given.trim()).map_err(|e| {
        format!("--server {given:?} is not a URL ({e}): give one such as http://127.0.0.1:8080")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "--server {given:?}: the scheme must be http or https"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("--server {given:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "--server holds user info (user:password@): the token (--token) is the credential"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "--server {given:?}: no query or fragment, only scheme, host, port and an optional path"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A refused request ([`refusal`]) when `body` is a `requestError`; else an answer that is not
/// the API's (exit 3): a proxy's error page, another service's error document.
fn refused(status: u16, format: Format, body: &[u8]) -> Failure {
    let limits = netapi_chat_runtime::xml::XmlLimits::default();
    match wire::decode::<api::RequestError>(format, body, &limits) {
        Ok(_) => Failure::Refused(refusal(status, format, body)),
        Err(_) => Failure::NoAnswer(format!(
            "{} (not an answer of the chat API)",
            refusal(status, format, body)
        )),
    }
}

/// Whether `body`, a `2xx` answer labelled `content_type`, is a document of the chat API:
/// empty, or JSON that is one object holding one member (the API's wrapping: an object or
/// a list), or XML whose root is in one of the API's namespaces. Before, anything was printed
/// as the answer, exit 0 (an HTML page, another service's `<foo/>`): an outside review.
fn is_api_document(content_type: Option<&str>, body: &[u8]) -> bool {
    if body.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    match netapi_chat_runtime::media::body_format(content_type) {
        Ok(Format::Json) => serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
            v.as_object()
                .is_some_and(|o| o.len() == 1 && o.values().all(|m| m.is_object() || m.is_array()))
        }),
        Ok(Format::Xml) => xml_root_namespace(body).is_some_and(|ns| {
            netapi_chat_api::XSDS
                .iter()
                .any(|(known, _, _)| *known == ns)
        }),
        Err(_) => false,
    }
}

/// The namespace of the root element of the XML document `body`, if it reads as one (the
/// server's own reader: its limits, no DOCTYPE).
fn xml_root_namespace(body: &[u8]) -> Option<String> {
    let limits = netapi_chat_runtime::xml::XmlLimits::default();
    netapi_chat_runtime::xml::parse_document(body, &limits)
        .ok()?
        .namespace
        .map(|ns| ns.to_string())
}

/// An API document as the progenitor client's type for it: through its JSON form, the one
/// both crates are generated to read and write.
pub fn to_client<T: Document, C: DeserializeOwned>(doc: &T) -> Result<C, Failure> {
    serde_json::from_slice(&wire::encode(Format::Json, doc)).map_err(|e| {
        Failure::Usage(format!(
            "{} does not convert to the generated client's type: {e}",
            T::NAME
        ))
    })
}

/// The document type an answer is read as: an API document, or none (a `204`).
trait Expected {
    /// The answer's JSON (as the generated client read it) as the text to print, in the
    /// API type's property order (the spec's, as the server writes it; the generated
    /// client's types order them otherwise). Reading it as the API type also checks it.
    fn print(json: serde_json::Value) -> Result<Option<String>, Failure>;
}

/// The answer of an operation without a document (`204`).
enum NoDocument {}

impl Expected for NoDocument {
    fn print(_: serde_json::Value) -> Result<Option<String>, Failure> {
        Ok(None)
    }
}

impl<T: Document> Expected for T {
    fn print(json: serde_json::Value) -> Result<Option<String>, Failure> {
        let not_it = |e: String| Failure::NoAnswer(format!("the answer is not a {}: {e}", T::NAME));
        let bytes = serde_json::to_vec(&json).map_err(|e| not_it(e.to_string()))?;
        let limits = netapi_chat_runtime::xml::XmlLimits::default();
        let doc =
            wire::decode::<T>(Format::Json, &bytes, &limits).map_err(|e| not_it(e.rendered()))?;
        let ordered: serde_json::Value = serde_json::from_slice(&wire::encode(Format::Json, &doc))
            .map_err(|e| not_it(e.to_string()))?;
        serde_json::to_string_pretty(&ordered)
            .map(Some)
            .map_err(|e| not_it(e.to_string()))
    }
}

/// What a generated-client call gives: the answer document, or the error.
type Generated<T> =
    Result<ResponseValue<T>, progenitor_client::Error<generated::types::RequestErrorRoot>>;

/// The answer of a generated-client call, its document read as `A`.
async fn from_generated<A: Expected, T: Serialize>(
    session: &Session,
    result: Generated<T>,
) -> Result<Answer, Failure> {
    match result {
        Ok(value) => {
            let location = value
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            let json = serde_json::to_value(value.into_inner())
                .map_err(|e| Failure::NoAnswer(format!("the answer does not print: {e}")))?;
            Ok(Answer {
                location,
                document: A::print(json)?,
            })
        }
        Err(progenitor_client::Error::ErrorResponse(error)) => {
            let status = error.status().as_u16();
            let body = serde_json::to_vec(&error.into_inner()).unwrap_or_default();
            Err(refused(status, Format::Json, &body))
        }
        // A status the spec does not list for the operation (e.g. a 503 of a failing store):
        // read like any other answer.
        Err(progenitor_client::Error::UnexpectedResponse(response)) => read_answer(response).await,
        Err(progenitor_client::Error::CommunicationError(e)) => Err(session.unreachable(&e)),
        // A status the operation has, with a body that is not its document: said with an
        // excerpt of the body, not progenitor's `Debug` of its bytes.
        Err(progenitor_client::Error::InvalidResponsePayload(body, e)) => {
            let excerpt = excerpt(&body);
            Err(Failure::NoAnswer(match excerpt.is_empty() {
                true => format!("the answer has no document ({e})"),
                false => format!("the answer is not a document of the chat API ({e}): {excerpt}"),
            }))
        }
        Err(e) => Err(Failure::NoAnswer(format!("no usable answer: {e}"))),
    }
}

/// Reads a raw answer: the body of a 2xx as the document, else a refusal.
async fn read_answer(response: reqwest::Response) -> Result<Answer, Failure> {
    let status = response.status();
    let header = |name: http::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header(http::header::LOCATION);
    let content_type = header(http::header::CONTENT_TYPE);
    let format =
        netapi_chat_runtime::media::body_format(content_type.as_deref()).unwrap_or(Format::Json);
    let body = response
        .bytes()
        .await
        .map_err(|e| Failure::NoAnswer(format!("reading the answer: {e}")))?;
    if !status.is_success() {
        return Err(refused(status.as_u16(), format, &body));
    }
    if !is_api_document(content_type.as_deref(), &body) {
        let excerpt = excerpt(&body);
        return Err(Failure::NoAnswer(format!(
            "{status}: not an answer of the chat API: {excerpt}"
        )));
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    Ok(Answer {
        location,
        document: (!text.is_empty()).then(|| netapi_chat_webhooks::pretty::document(format, text)),
    })
}

/// A client of one server, for one user, in one face.
struct Session {
    http: reqwest::Client,
    /// The server's base URL, for messages.
    base: String,
    /// What its certificate is verified against, for messages.
    trust: crate::reach::Trust,
    generated: generated::Client,
    /// The XML face's request lines: each operation's method and URL, from the spec.
    requests: Requests,
    user: String,
    format: Format,
}

/// Which list, with its paging.
struct Page<'a> {
    max_entries: Option<NonZeroU64>,
    cursor: Option<&'a str>,
}

impl Page<'_> {
    /// The cursor as the generated client's type for list `C`.
    fn cursor<C>(&self) -> Result<Option<C>, Failure>
    where
        C: for<'s> TryFrom<&'s str>,
    {
        client_param("--cursor", self.cursor)
    }
}

/// An option's value as the generated client's type for that query parameter (which checks
/// what the spec says of it, e.g. a length); refused as a usage error.
fn client_param<C>(flag: &str, value: Option<&str>) -> Result<Option<C>, Failure>
where
    C: for<'s> TryFrom<&'s str>,
{
    value
        .map(|v| {
            C::try_from(v).map_err(|_| Failure::Usage(format!("{flag} `{v}` is not accepted")))
        })
        .transpose()
}

/// Whether `user` is OMA's `acr:auth` (the token's own user; the scheme is
/// case-insensitive, so the whole keyword is).
pub fn is_acr_auth(user: &str) -> bool {
    user.eq_ignore_ascii_case("acr:auth")
}

/// The user a session's `resourceURL` is written for, percent-decoded: the server writes
/// every `resourceURL` for the user it resolved the path's `{userId}` to, so for `acr:auth`
/// this is the token's user. The segment is found where the spec's session path has
/// `{userId}` (that path built with a marker by the generated [`Urls`]), counted from the
/// end, so a server behind a prefix or another host name reads the same.
pub fn user_of_session_url(url: &str) -> Option<String> {
    const MARK: &str = "USER";
    let template = Urls::new("").session(MARK, "SESSION");
    let from_end = template.split('/').rev().position(|s| s == MARK)?;
    let path = url.split(['?', '#']).next()?;
    let segment = path.trim_end_matches('/').rsplit('/').nth(from_end)?;
    let user = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!user.is_empty()).then_some(user)
}

impl Session {
    /// Connects nothing yet: builds the HTTP client carrying the token.
    fn new(args: &ClientArgs) -> Result<Session, Failure> {
        let token = args.token.as_deref().ok_or_else(|| {
            Failure::Usage("no token: give --token or set NETAPI_CHAT_TOKEN".to_owned())
        })?;
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| Failure::Usage("the token holds characters a header cannot".to_owned()))?;
        auth.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, auth);
        let trust = crate::reach::Trust::new(
            "give --ca-file (NETAPI_CHAT_CA_FILE) with the certificate of the CA that issued the \
             server's, or with the server's own certificate",
        )
        .with("--ca-file", args.ca_file.as_deref());
        let http = trust
            .client_builder()
            .map_err(Failure::Usage)?
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Failure::Usage(format!("cannot make an HTTP client: {e}")))?;
        let base = server_base(&args.server).map_err(Failure::Usage)?;
        if args.user.trim().is_empty() {
            return Err(Failure::Usage(
                "--user is empty: give a tel: or sip: address, or acr:auth".to_owned(),
            ));
        }
        let base = base.as_str();
        Ok(Session {
            generated: generated::Client::new_with_client(base, http.clone()),
            http,
            base: base.to_owned(),
            trust,
            requests: Requests::new(Urls::new(base)),
            user: args.user.clone(),
            format: args.format.into(),
        })
    }

    /// Why a request got no answer, naming the server's URL ([`crate::reach`]).
    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        Failure::NoAnswer(crate::reach::unreachable(&self.base, e, &self.trust))
    }

    /// The XML face: the operation's `request` line (from the generated [`Requests`]) with
    /// `doc` encoded in XML, the answer asked in XML.
    async fn xml<T: Document>(
        &self,
        request: OperationRequest,
        doc: Option<&T>,
    ) -> Result<Answer, Failure> {
        let mut request = self
            .http
            .request(request.method, request.url)
            .header(http::header::ACCEPT, Format::Xml.media_type());
        if let Some(doc) = doc {
            request = request
                .header(http::header::CONTENT_TYPE, Format::Xml.content_type())
                .body(wire::encode(Format::Xml, doc));
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        read_answer(response).await
    }

    /// The XML face of a request without a body.
    async fn xml_empty(&self, request: OperationRequest) -> Result<Answer, Failure> {
        self.xml::<api::RequestError>(request, None).await
    }

    /// A read in the session's face: the generated call `json` (a future, so not run in the
    /// XML face), or the same operation's `request` asking for XML.
    async fn fetch<A: Expected, T: Serialize>(
        &self,
        json: impl Future<Output = Generated<T>>,
        request: OperationRequest,
    ) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => from_generated::<A, _>(self, json.await).await,
            Format::Xml => self.xml_empty(request).await,
        }
    }

    /// `get session`, and the look-up of [`Session::me_in`].
    async fn get_session(&self, session: &str) -> Result<Answer, Failure> {
        let user = self.user.as_str();
        self.fetch::<api::ChatSessionInformation, _>(
            self.generated.get_chat_session(user, session),
            self.requests.get_chat_session(user, session),
        )
        .await
    }

    /// The address the acting user has as a participant of `session`: `--user` itself, or
    /// for `acr:auth` the user the server resolved it to, read from the session's
    /// `resourceURL` ([`user_of_session_url`]); a participant's own resources are named by
    /// its address, and the server resolves `acr:auth` only in the path's `{userId}`.
    async fn me_in(&self, session: &str) -> Result<String, Failure> {
        if !is_acr_auth(&self.user) {
            return Ok(self.user.clone());
        }
        let printed = self.get_session(session).await?.document.ok_or_else(|| {
            Failure::NoAnswer("the session was answered without a document".to_owned())
        })?;
        let limits = netapi_chat_runtime::xml::XmlLimits::default();
        let info =
            wire::decode::<api::ChatSessionInformation>(self.format, printed.as_bytes(), &limits)
                .map_err(|e| {
                Failure::NoAnswer(format!(
                    "the answer is not a chatSessionInformation: {}",
                    e.rendered()
                ))
            })?;
        info.resource_url
            .as_deref()
            .and_then(user_of_session_url)
            .ok_or_else(|| {
                Failure::NoAnswer(
                    "the session's resourceURL does not name the user acr:auth stands for"
                        .to_owned(),
                )
            })
    }

    /// The participant a `get participant` names, or the acting user ([`Session::me_in`]).
    async fn participant_or_me(
        &self,
        session: &str,
        participant: Option<&str>,
    ) -> Result<String, Failure> {
        match participant {
            Some(p) => Ok(p.to_owned()),
            None => self.me_in(session).await,
        }
    }

    /// `get …`: one resource.
    async fn get(&self, what: &GetWhat) -> Result<Answer, Failure> {
        let user = self.user.as_str();
        let (g, requests) = (&self.generated, &self.requests);
        match what {
            GetWhat::Subscription { subscription } => {
                self.fetch::<api::ChatSubscription, _>(
                    g.get_chat_subscription(user, subscription),
                    requests.get_chat_subscription(user, subscription),
                )
                .await
            }
            GetWhat::Session { session } => self.get_session(session).await,
            GetWhat::Participant {
                session,
                participant,
            }
            | GetWhat::ParticipantStatus {
                session,
                participant,
            } => {
                let who = self
                    .participant_or_me(session, participant.as_deref())
                    .await?;
                if matches!(what, GetWhat::Participant { .. }) {
                    self.fetch::<api::ParticipantInformation, _>(
                        g.get_participant(user, session, &who),
                        requests.get_participant(user, session, &who),
                    )
                    .await
                } else {
                    self.fetch::<api::ParticipantSessionStatus, _>(
                        g.get_participant_status(user, session, &who),
                        requests.get_participant_status(user, session, &who),
                    )
                    .await
                }
            }
            GetWhat::Message { session, message } => {
                self.fetch::<api::ChatMessage, _>(
                    g.get_message(user, session, message),
                    requests.get_message(user, session, message),
                )
                .await
            }
            GetWhat::MessageStatus { session, message } => {
                self.fetch::<api::MessageDeliveryStatus, _>(
                    g.get_message_delivery_status(user, session, message),
                    requests.get_message_delivery_status(user, session, message),
                )
                .await
            }
        }
    }

    /// `redeliver`: the subscription's dead letters queued again (no request body).
    async fn redeliver(&self, subscription: &str) -> Result<Answer, Failure> {
        let user = self.user.as_str();
        match self.format {
            Format::Json => {
                from_generated::<api::ChatSubscription, _>(
                    self,
                    self.generated
                        .redeliver_dead_letters(user, subscription)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.redeliver_dead_letters(user, subscription);
                self.xml_empty(request).await
            }
        }
    }

    /// `rotate-secret`: the subscription signs with `doc`'s secret from now on.
    async fn rotate_secret(
        &self,
        subscription: &str,
        doc: api::SubscriptionSecret,
    ) -> Result<Answer, Failure> {
        let user = self.user.as_str();
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<api::SubscriptionSecret, _>(
                    self,
                    self.generated
                        .rotate_subscription_secret(user, subscription, &body)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.rotate_subscription_secret(user, subscription);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    async fn subscribe(&self, doc: api::ChatSubscription) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<api::ChatSubscription, _>(
                    self,
                    self.generated
                        .create_chat_subscription(&self.user, &body)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.create_chat_subscription(&self.user);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    async fn unsubscribe(&self, subscription: &str) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                from_generated::<NoDocument, _>(
                    self,
                    self.generated
                        .delete_chat_subscription(&self.user, subscription)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self
                    .requests
                    .delete_chat_subscription(&self.user, subscription);
                self.xml_empty(request).await
            }
        }
    }

    async fn start(&self, doc: api::ChatSessionInformation) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<api::ChatSessionInformation, _>(
                    self,
                    self.generated.create_chat_session(&self.user, &body).await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.create_chat_session(&self.user);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    async fn invite(&self, session: &str, doc: api::ParticipantList) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<api::ParticipantList, _>(
                    self,
                    self.generated
                        .add_participants(&self.user, session, &body)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.add_participants(&self.user, session);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    /// Accept, decline, leave, re-join: the user's own participant status in `session`.
    async fn set_status(
        &self,
        session: &str,
        status: api::ParticipantStatus,
    ) -> Result<Answer, Failure> {
        let doc = api::ParticipantSessionStatus { status };
        let user = self.user.as_str();
        let me = self.me_in(session).await?;
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<api::ParticipantSessionStatus, _>(
                    self,
                    self.generated
                        .update_participant_status(user, session, &me, &body)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.update_participant_status(user, session, &me);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    async fn end(&self, session: &str) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                from_generated::<NoDocument, _>(
                    self,
                    self.generated
                        .delete_chat_session(&self.user, session)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.delete_chat_session(&self.user, session);
                self.xml_empty(request).await
            }
        }
    }

    async fn cancel(&self, session: &str, participant: &str) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                from_generated::<NoDocument, _>(
                    self,
                    self.generated
                        .cancel_invitation(&self.user, session, participant)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self
                    .requests
                    .cancel_invitation(&self.user, session, participant);
                self.xml_empty(request).await
            }
        }
    }

    async fn send(&self, session: &str, doc: api::ChatMessage) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<api::ResourceReference, _>(
                    self,
                    self.generated
                        .send_message(&self.user, session, &body)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self.requests.send_message(&self.user, session);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    async fn confirm(
        &self,
        session: &str,
        message: &str,
        doc: api::MessageDeliveryStatus,
    ) -> Result<Answer, Failure> {
        match self.format {
            Format::Json => {
                let body = to_client(&doc)?;
                from_generated::<NoDocument, _>(
                    self,
                    self.generated
                        .confirm_message_delivery(&self.user, session, message, &body)
                        .await,
                )
                .await
            }
            Format::Xml => {
                let request = self
                    .requests
                    .confirm_message_delivery(&self.user, session, message);
                self.xml(request, Some(&doc)).await
            }
        }
    }

    async fn list(&self, what: &ListWhat, page: &Page<'_>) -> Result<Answer, Failure> {
        let user = self.user.as_str();
        let n = page.max_entries;
        if self.format == Format::Xml {
            // The page's query goes to each list's builder as the spec's parameters.
            let (r, max, cursor) = (&self.requests, n.map(NonZeroU64::get), page.cursor);
            let request = match what {
                ListWhat::Subscriptions => r.list_chat_subscriptions(user, max, cursor),
                ListWhat::Sessions => r.list_chat_sessions(user, max, cursor),
                ListWhat::Messages { session } => r.list_messages(user, session, max, cursor),
                ListWhat::Participants { session } => {
                    r.list_participants(user, session, max, cursor)
                }
                ListWhat::DeadLetters {
                    subscription,
                    since,
                } => r.list_dead_letters(user, subscription, max, cursor, since.as_deref()),
            };
            return self.xml_empty(request).await;
        }
        let g = &self.generated;
        match what {
            ListWhat::Subscriptions => {
                let cursor = page.cursor()?;
                from_generated::<api::ChatSubscriptionList, _>(
                    self,
                    g.list_chat_subscriptions(user, cursor.as_ref(), n).await,
                )
                .await
            }
            ListWhat::Sessions => {
                let cursor = page.cursor()?;
                from_generated::<api::ChatSessionList, _>(
                    self,
                    g.list_chat_sessions(user, cursor.as_ref(), n).await,
                )
                .await
            }
            ListWhat::Messages { session } => {
                let cursor = page.cursor()?;
                from_generated::<api::ChatMessageList, _>(
                    self,
                    g.list_messages(user, session, cursor.as_ref(), n).await,
                )
                .await
            }
            ListWhat::Participants { session } => {
                let cursor = page.cursor()?;
                from_generated::<api::ParticipantList, _>(
                    self,
                    g.list_participants(user, session, cursor.as_ref(), n).await,
                )
                .await
            }
            ListWhat::DeadLetters {
                subscription,
                since,
            } => {
                let cursor = page.cursor()?;
                let since = client_param("--since", since.as_deref())?;
                from_generated::<api::DeadLetterList, _>(
                    self,
                    g.list_dead_letters(user, subscription, cursor.as_ref(), n, since.as_ref())
                        .await,
                )
                .await
            }
        }
    }
}

impl ClientCommand {
    /// Whether it creates a resource whose id `--id` prints: its answer is a `201` whose
    /// `Location` names one new resource (an invitation's names the participants when it
    /// invites several, so it is not one).
    pub fn creates(&self) -> bool {
        matches!(
            self,
            ClientCommand::Subscribe { .. }
                | ClientCommand::Start { .. }
                | ClientCommand::Send { .. }
        )
    }
}

/// `--id` with a command that creates nothing: a bad command line, refused before anything is
/// sent (it used to send the request, then exit 3 for an answer without a `Location`, as if
/// the server had answered wrongly).
fn id_refused(args: &ClientArgs) -> Result<(), Failure> {
    if args.id && !args.command.creates() {
        return Err(Failure::Usage(
            "--id prints the id of a created resource: only subscribe, start and send create one"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The participants of a start or invite, as the API's list entries.
fn invitees(addresses: &[String]) -> Vec<api::ParticipantInformation> {
    addresses
        .iter()
        .map(|address| api::ParticipantInformation {
            address: address.clone(),
            name: None,
            is_originator: None,
            status: None,
            client_correlator: None,
            resource_url: None,
        })
        .collect()
}

/// Runs one operation (not `listen`): what to print on stdout, or why it failed.
pub async fn run(args: &ClientArgs) -> Result<String, Failure> {
    id_refused(args)?;
    let session = Session::new(args)?;
    let answer = match &args.command {
        ClientCommand::Subscribe {
            notify_url,
            callback_data,
            notification_format,
            duration,
            signing_secret,
            client_correlator,
        } => {
            session
                .subscribe(api::ChatSubscription {
                    callback_reference: api::CallbackReference {
                        notify_url: notify_url.clone(),
                        callback_data: callback_data.clone(),
                        notification_format: notification_format.map(|f| match f {
                            Face::Json => api::NotificationFormat::Json,
                            Face::Xml => api::NotificationFormat::Xml,
                        }),
                    },
                    duration: *duration,
                    client_correlator: client_correlator.clone(),
                    resource_url: None,
                    subscription_status: None,
                    status_reason: None,
                    signing_secret: signing_secret.clone(),
                })
                .await
        }
        ClientCommand::Unsubscribe { subscription } => session.unsubscribe(subscription).await,
        ClientCommand::Start {
            participants,
            subject,
            client_correlator,
        } => {
            session
                .start(api::ChatSessionInformation {
                    subject: subject.clone(),
                    participant: invitees(participants),
                    client_correlator: client_correlator.clone(),
                    ..api::ChatSessionInformation::default()
                })
                .await
        }
        ClientCommand::Invite {
            session: id,
            participants,
        } => {
            session
                .invite(
                    id,
                    api::ParticipantList {
                        participant: invitees(participants),
                        resource_url: None,
                        link: Vec::new(),
                    },
                )
                .await
        }
        ClientCommand::Accept { session: id } | ClientCommand::Rejoin { session: id } => {
            session
                .set_status(id, api::ParticipantStatus::Connected)
                .await
        }
        ClientCommand::Decline { session: id } | ClientCommand::Leave { session: id } => {
            session
                .set_status(id, api::ParticipantStatus::Disconnected)
                .await
        }
        ClientCommand::End { session: id } => session.end(id).await,
        ClientCommand::Cancel {
            session: id,
            participant,
        } => session.cancel(id, participant).await,
        ClientCommand::Send {
            session: id,
            text,
            report,
            client_correlator,
        } => {
            session
                .send(
                    id,
                    api::ChatMessage {
                        text: text.clone(),
                        success_report: report.then_some(true),
                        report_request: Vec::new(),
                        client_correlator: client_correlator.clone(),
                        sender_address: None,
                        date_time: None,
                        resource_url: None,
                    },
                )
                .await
        }
        ClientCommand::Confirm {
            session: id,
            message,
            status,
        } => {
            let status = match status {
                Confirmed::Delivered => api::MessageStatus::Delivered,
                Confirmed::Displayed => api::MessageStatus::Displayed,
            };
            session
                .confirm(id, message, api::MessageDeliveryStatus { status })
                .await
        }
        ClientCommand::List {
            what,
            max_entries,
            cursor,
        } => {
            let page = Page {
                max_entries: *max_entries,
                cursor: cursor.as_deref(),
            };
            session.list(what, &page).await
        }
        ClientCommand::Get { what } => session.get(what).await,
        ClientCommand::Redeliver { subscription } => session.redeliver(subscription).await,
        ClientCommand::RotateSecret {
            subscription,
            signing_secret,
        } => {
            let signing_secret = signing_secret
                .clone()
                .unwrap_or_else(|| crate::signing::Signer::generate().1);
            session
                .rotate_secret(
                    subscription,
                    api::SubscriptionSecret {
                        signing_secret,
                        previous_secret_expires: None,
                    },
                )
                .await
        }
        ClientCommand::Listen { .. } => {
            return Err(Failure::Usage(
                "listen runs through `main`, not `run`".to_owned(),
            ));
        }
    }?;
    answer.output(args.id)
}

/// `netapi-chat client …`: runs the command, prints, and gives the exit status.
pub async fn main(args: ClientArgs) -> std::process::ExitCode {
    use std::io::Write as _;
    let done = match &args.command {
        ClientCommand::Listen {
            port,
            bind,
            secrets,
        } => match id_refused(&args) {
            Ok(()) => listen(bind, *port, secrets).await.map(|()| String::new()),
            Err(refused) => Err(refused),
        },
        _ => run(&args).await,
    };
    match done {
        Ok(out) => {
            // Stdout may be closed (e.g. piped into `head`): not the command's failure.
            let _ = std::io::stdout().write_all(out.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("netapi-chat client: {failure}");
            std::process::ExitCode::from(failure.exit_status())
        }
    }
}

/// `listen`: the project's printing listener (`netapi_chat_webhooks::listen`).
async fn listen(bind: &str, port: u16, secrets: &[String]) -> Result<(), Failure> {
    let signers = secrets
        .iter()
        .map(|s| {
            crate::signing::Signer::from_secret(s)
                .map_err(|e| Failure::Usage(format!("--secret: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let addr = if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    };
    netapi_chat_webhooks::listen::serve_printing(&addr, signers)
        .await
        .map_err(|e| Failure::NoAnswer(format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_last_segment_of_the_location() {
        assert_eq!(
            last_segment("http://h/v1/chat/tel%3A%2B1/chatSessions/s-12"),
            "s-12"
        );
        assert_eq!(last_segment("/a/b%20c/?x=1"), "b c");
        let answer = Answer {
            location: Some("http://h/x/m1".to_owned()),
            document: Some("{}\n\n".to_owned()),
        };
        assert_eq!(answer.output(true), Ok("m1\n".to_owned()));
        let answer = Answer {
            location: None,
            document: Some("{}\n\n".to_owned()),
        };
        assert_eq!(answer.output(false), Ok("{}\n".to_owned()));
        assert!(matches!(
            Answer::default().output(true),
            Err(Failure::NoAnswer(_))
        ));
        assert_eq!(Answer::default().output(false), Ok(String::new()));
    }

    #[test]
    fn a_server_url_is_http_or_https_with_a_host_and_nothing_else() {
        assert_eq!(
            server_base("http://127.0.0.1:8080/").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        assert_eq!(
            server_base("https://chat.example.com/prefix").as_deref(),
            Ok("https://chat.example.com/prefix")
        );
        for bad in [
            "127.0.0.1:8080",
            "",
            "ftp://127.0.0.1",
            "http://u:p@127.0.0.1:8080",
            "http://127.0.0.1:8080?x=1",
            "http://127.0.0.1:8080/#f",
        ] {
            let e = server_base(bad).expect_err(bad);
            assert!(!e.contains(":p@"), "no password in {e}");
        }
    }

    #[test]
    fn only_an_api_document_is_an_answer() {
        let json = Some("application/json");
        let xml = Some("application/xml");
        assert!(is_api_document(
            json,
            br#"{"chatSessionInformation":{"subject":"x"}}"#
        ));
        assert!(is_api_document(json, br#"{"notificationList":[]}"#));
        assert!(is_api_document(json, b""));
        assert!(!is_api_document(json, br#"{"error":"nope"}"#));
        assert!(!is_api_document(json, br#"{"a":{},"b":{}}"#));
        assert!(!is_api_document(
            Some("text/html"),
            b"<html><body>hello</body></html>"
        ));
        assert!(is_api_document(
            xml,
            br#"<?xml version="1.0"?><chat:chatSessionInformation xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><subject>x</subject></chat:chatSessionInformation>"#
        ));
        assert!(!is_api_document(xml, b"<foo/>"));
        assert!(!is_api_document(xml, br#"<x:foo xmlns:x="urn:other"/>"#));
        assert!(matches!(
            refused(500, Format::Json, b"boom"),
            Failure::NoAnswer(_)
        ));
        let error = br#"{"requestError":{"serviceException":{"messageId":"SVC0001","text":"t","variables":[]}}}"#;
        assert!(matches!(
            refused(503, Format::Json, error),
            Failure::Refused(_)
        ));
    }

    #[test]
    fn a_refusal_is_the_oma_text_with_its_variables_in_either_format() {
        let json = br#"{"requestError":{"serviceException":{"messageId":"SVC0004","text":"No valid addresses provided in message part %1","variables":["participant"]}}}"#;
        assert_eq!(
            refusal(400, Format::Json, json),
            "400 SVC0004: No valid addresses provided in message part participant"
        );
        let xml = br#"<common:requestError xmlns:common="urn:oma:xml:rest:netapi:common:1"><policyException><messageId>POL0001</messageId><text>A policy error occurred: %1</text><variables>quota</variables></policyException></common:requestError>"#;
        assert_eq!(
            refusal(403, Format::Xml, xml),
            "403 POL0001: A policy error occurred: quota"
        );
        assert_eq!(
            refusal(502, Format::Json, b" bad gateway "),
            "502: bad gateway"
        );
        assert_eq!(refusal(500, Format::Json, b""), "500 (no body)");
    }

    #[test]
    fn a_request_document_converts_to_the_generated_clients_type() {
        let doc = api::ChatMessage {
            text: "12:30?".to_owned(),
            success_report: Some(true),
            report_request: Vec::new(),
            client_correlator: None,
            sender_address: None,
            date_time: None,
            resource_url: None,
        };
        let root: generated::types::ChatMessageRoot = to_client(&doc).expect("converts");
        let back = serde_json::to_value(&root).expect("serializes");
        assert_eq!(
            back,
            serde_json::json!({"chatMessage": {"text": "12:30?", "successReport": true}})
        );
    }

    #[test]
    fn the_acting_user_is_read_from_a_sessions_resource_url() {
        assert_eq!(
            user_of_session_url("http://h:1/v1/chat/tel%3A%2B15551230001/chatSessions/s-1")
                .as_deref(),
            Some("tel:+15551230001")
        );
        // Behind a prefix, with a query: counted from the end.
        assert_eq!(
            user_of_session_url(
                "https://gw/chat-api/v1/chat/sip%3Abob%40example.com/chatSessions/s-2/?x=1"
            )
            .as_deref(),
            Some("sip:bob@example.com")
        );
        assert_eq!(user_of_session_url("s-1"), None);
        assert_eq!(
            user_of_session_url("http://h/v1/chat//chatSessions/s"),
            None
        );
        assert!(is_acr_auth("ACR:Auth") && !is_acr_auth("tel:+1"));
    }

    #[test]
    fn exit_statuses_tell_refused_from_unreachable() {
        assert_eq!(Failure::Refused(String::new()).exit_status(), 1);
        assert_eq!(Failure::Usage(String::new()).exit_status(), 2);
        assert_eq!(Failure::NoAnswer(String::new()).exit_status(), 3);
    }
}
