//! Starting the HTTP server: the generated API routed to [`ChatServer`], plus the published
//! documents (`/openapi.json`, `/xsd/{file}`) and the health endpoints ([`crate::health`]).

use crate::auth::{ANY_USER, JwtConfig, JwtVerifier, TokenFile, TokenVerifier, WatchedTokenFile};
use crate::chat::{Chat, Settings};
use crate::config::{AuthConfig, Config};
use crate::data_dir;
use crate::gate::Methods;
use crate::handlers::ChatServer;
use crate::rate::{AuthFailures, RateLimiter};
use crate::signing::Signer;
use crate::store::Store;
use crate::urls::Urls;
use dropshot::{
    Body, ConfigDropshot, ConnectionLimits, HttpError, HttpServer, Path, RequestContext,
    ServerBuilder, endpoint,
};
use http::{Response, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The API description did not build (a bug in the generated routes).
    Api(String),
    /// The logger could not be set up.
    Log(String),
    /// Binding or starting the listener failed (e.g. the port is in use).
    Listen(String),
    /// The store (the data directory's database, or PostgreSQL) could not be opened or read.
    Store(String),
    /// The database went away while the state was read, after it was opened (restarted, its
    /// session ended): opened again by a lone server ([`start`]), by a cluster's instance
    /// after starting over as a standby (`crate::cluster`).
    StoreAway(String),
    /// The token file or JWKS could not be read.
    Auth(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Api(e) => write!(f, "building the API failed: {e}"),
            StartError::Log(e) => write!(f, "setting up logging failed: {e}"),
            StartError::Listen(e) => write!(f, "could not listen: {e}"),
            // The store is the data directory's SQLite database or, with
            // NETAPI_CHAT_DATABASE_URL, PostgreSQL: the message names neither wrongly.
            StartError::Store(e) | StartError::StoreAway(e) => {
                write!(f, "could not open the store: {e}")
            }
            StartError::Auth(e) => write!(f, "authentication is not set up: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The document endpoints below, for the request gate (they are not in the published OpenAPI):
/// both are `GET`, so `HEAD` works on them too.
pub const DOCUMENT_PATHS: [&str; 2] = ["/openapi.json", "/xsd/{file}"];

/// Every route that is not an operation of the published OpenAPI (documents, health and
/// metrics, all `GET`): the request gate learns them from here, next to where they are
/// registered. `/metrics` is one only when metrics are on.
pub fn unpublished_get_paths() -> impl Iterator<Item = &'static str> {
    DOCUMENT_PATHS.into_iter().chain(crate::health::PATHS)
}

/// Serves the published OpenAPI document (JSON; it describes both media types), with this
/// server in its `servers`.
#[endpoint { method = GET, path = "/openapi.json", unpublished = true }]
async fn openapi_document(rqctx: RequestContext<ChatServer>) -> Result<Response<Body>, HttpError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, DOCUMENT_CACHING)
        // A clone of the bytes made at start, not a copy of the document per request.
        .body(Body::from(rqctx.context().openapi.clone()))
        .map_err(|e| HttpError::for_internal_error(e.to_string()))
}

/// The published OpenAPI document with `servers` naming `base`, this server's public URL (the
/// one its links use: `NETAPI_CHAT_PUBLIC_URL`, else the bound address and scheme). The
/// checked-in document names `http://127.0.0.1:8080`, which clients generated from the served
/// one baked in as their default base URL (their first call refused anywhere else), and
/// which Swagger UI, Redoc and Prism read. Falls back to the checked-in text should it not
/// parse (it always does: a test reads it).
pub fn published_document(base: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(netapi_chat_api::OPENAPI_JSON)
    else {
        return netapi_chat_api::OPENAPI_JSON.to_owned();
    };
    doc["servers"] = serde_json::json!([{ "url": base, "description": "this server" }]);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| netapi_chat_api::OPENAPI_JSON.to_owned())
}

/// Path of an XSD file.
#[derive(Deserialize, JsonSchema)]
struct XsdPath {
    file: String,
}

/// Serves the XSDs of the XML face, e.g. `/xsd/rest_netapi_chat-v1_0.xsd`.
#[endpoint { method = GET, path = "/xsd/{file}", unpublished = true }]
async fn xsd_document(
    rqctx: RequestContext<ChatServer>,
    path: Path<XsdPath>,
) -> Result<Response<Body>, HttpError> {
    let file = path.into_inner().file;
    match netapi_chat_api::XSDS
        .iter()
        .find(|(_, name, _)| *name == file)
    {
        Some((_, _, text)) => document("application/xml", text),
        // Any other name is a path with nothing there: the `404 SVC2008` every unknown path
        // gets, in the format negotiated (before: dropshot's own JSON error, whatever the
        // client accepted; an outside review).
        None => netapi_chat_runtime::negotiate::error_response::<netapi_chat_api::RequestError>(
            crate::gate::answer_format(rqctx.request.headers()),
            &crate::gate::unrouted(rqctx.request.uri().path()),
        ),
    }
}

/// How long a cache may keep a published document: the same for everyone, changed only by an
/// upgrade (or, for the OpenAPI's `servers`, the public URL), so five minutes. Said outright,
/// so that the answer hook's `no-store` ([`no_store`]) leaves it, and an error on a document's
/// path (a `404` of an unknown XSD, a `406`) is not kept.
const DOCUMENT_CACHING: &str = "max-age=300";

fn document(content_type: &'static str, text: &'static str) -> Result<Response<Body>, HttpError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, DOCUMENT_CACHING)
        .body(Body::from(text))
        .map_err(|e| HttpError::for_internal_error(e.to_string()))
}

/// The verifier of access tokens, and a message to print once (a token file just generated).
/// A token file is watched: edits (`netapi-chat tokens …`) apply without a restart.
///
/// A missing token file is generated (one `*` token, printed) only at a first start: when the
/// store holds data (`holds_data`), a missing file is a wrong `NETAPI_CHAT_TOKEN_FILE` or a
/// secret volume that did not mount, and generating one would lock every client out (`401`,
/// then the failure limit's `429`) while the server says it is ready, and print a new
/// full-access token into the logs. The start is refused instead, saying so.
fn token_verifier(
    config: &Config,
    holds_data: bool,
) -> Result<(Arc<dyn TokenVerifier>, Option<String>), StartError> {
    match &config.auth {
        AuthConfig::TokenFile(_) => {
            let path = config
                .token_file()
                .unwrap_or_else(|| config.data_dir.join("tokens"));
            if holds_data && !path.exists() {
                return Err(StartError::Auth(format!(
                    "the token file {} does not exist, but the store already holds data, so this \
                     is not a first start: is NETAPI_CHAT_TOKEN_FILE wrong, or did its volume not \
                     mount? Put the file back, or create one with `netapi-chat tokens add` \
                     (a new token file is generated only at a first start)",
                    path.display()
                )));
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                data_dir::create_for_file(dir).map_err(StartError::Auth)?;
            }
            let (file, summary) = TokenFile::load_or_generate(&path, &[ANY_USER])
                .map_err(|e| StartError::Auth(e.to_string()))?;
            data_dir::warn_if_readable_by_others(&path);
            let watched = WatchedTokenFile::new(path, file, crate::auth::watched::CHECK_INTERVAL);
            Ok((Arc::new(watched), summary))
        }
        AuthConfig::Jwt {
            jwks,
            issuer,
            audience,
            user_claim,
            scope,
        } => {
            let verifier = jwt_verifier(jwks, issuer, audience, user_claim, scope)
                .map_err(StartError::Auth)?;
            // The operator learns which keys of the JWKS are not used, and why, once.
            tracing::info!(jwks = %jwks.display(), keys = verifier.key_count(),
                skipped = verifier.skipped_keys().len(), "JWT verification keys loaded");
            for why in verifier.skipped_keys() {
                tracing::warn!(why = %crate::logsafe::Escaped(why), "a key of the JWKS is not used");
            }
            Ok((Arc::new(verifier), None))
        }
    }
}

/// The verifier [`AuthConfig::Jwt`]'s settings describe (JWKS file, expected `iss` and `aud`,
/// the claim naming the user, the scope required). Serving and `check-config` both build it
/// here, so that what `check-config` proves is what the server loads.
fn jwt_verifier(
    jwks: &std::path::Path,
    issuer: &str,
    audience: &str,
    user_claim: &str,
    scope: &str,
) -> Result<JwtVerifier, String> {
    let mut cfg = JwtConfig::new(issuer, audience);
    cfg.user_claim = user_claim.to_owned();
    cfg.required_scope = Some(scope.to_owned());
    // The operator is told which setting and file: the JWKS error alone names neither.
    JwtVerifier::from_jwks_file(jwks, cfg)
        .map_err(|e| format!("NETAPI_CHAT_JWKS_FILE ({}): {e}", jwks.display()))
}

/// What `check-config` says of the files the configuration names that the start would make,
/// beyond [`check`] (which refuses): a data directory or a token file that does not exist is
/// made by the start, a token file with a new token acting for every user (`*`). Right at a
/// first start, a typo otherwise (the operator review of 2026-12-07: a wrong
/// `NETAPI_CHAT_TOKEN_FILE` made a new all-powerful token in an unexpected place); the start
/// itself refuses a missing token file over existing data.
pub fn check_notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if !config.data_dir.exists() {
        notes.push(format!(
            "NETAPI_CHAT_DATA_DIR {} does not exist: the start creates it{}",
            config.data_dir.display(),
            if config.database_url.is_none() {
                " (a new, empty store)"
            } else {
                ""
            }
        ));
    }
    if let Some(path) = config.token_file()
        && !path.exists()
    {
        notes.push(format!(
            "the token file {} does not exist: a first start creates it with a new token \
             that acts for every user (`*`), printed once; over a store that holds data the \
             start refuses instead",
            path.display()
        ));
    }
    if config.database_ca_file.is_some() && config.database_url.is_none() {
        notes.push(
            "NETAPI_CHAT_DATABASE_CA_FILE is set but not used: NETAPI_CHAT_DATABASE_URL is not \
             set (the store is SQLite)"
                .to_owned(),
        );
    }
    notes
}

/// What `check-config` proves beyond parsing, without starting anything or writing: the TLS
/// certificate and key read and match (and, on an instance of a cluster, the certificate names
/// the host of its `https://` cluster URL), the configured webhook secret is a `whsec_…` secret,
/// and the files the configuration names
/// read as what they should be (the JWKS with the JWT settings; the token file, when it
/// exists: a missing one is generated at first start).
pub fn check(config: &Config) -> Result<(), String> {
    crate::logging::check(config)?;
    crate::cluster::validate(config)?;
    if let Some(files) = &config.tls {
        let must = crate::cluster::own_certificate_name(config, config.bind)?;
        crate::tls::server_config(files, must.as_ref())?;
    }
    crate::tls::callback_client_config(config.callback_ca_file.as_deref())?;
    // The database's and the cluster's CA files only where the start reads them: the start
    // refuses what this refuses, and a fleet-wide file naming a CA a SQLite server has no use
    // for must not stop it (the diff review).
    if config.database_url.is_some() {
        crate::tls::database_client_config(config.database_ca_file.as_deref())?;
    }
    if config.cluster_url.is_some() {
        crate::tls::cluster_client_config(config.cluster_ca_file.as_deref())?;
    }
    if let Some(secret) = &config.webhook_secret {
        Signer::from_secret(secret).map_err(|e| format!("NETAPI_CHAT_WEBHOOK_SECRET: {e}"))?;
    }
    match &config.auth {
        AuthConfig::TokenFile(_) => {
            if let Some(path) = config.token_file().filter(|p| p.exists()) {
                TokenFile::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        AuthConfig::Jwt {
            jwks,
            issuer,
            audience,
            user_claim,
            scope,
        } => {
            jwt_verifier(jwks, issuer, audience, user_claim, scope)?;
        }
    }
    Ok(())
}

/// The server-wide notification signer, and whether the operator opted into it for every
/// subscription: `NETAPI_CHAT_WEBHOOK_SECRET` (opted in), else the secret an earlier version
/// generated into the data directory (kept for the subscriptions it made), else none: every
/// new subscription has a secret of its own (see `chat::secrets`).
fn webhook_signer(config: &Config) -> Result<(Option<Signer>, bool), StartError> {
    let bad = |e: String| StartError::Auth(format!("webhook secret: {e}"));
    if let Some(secret) = &config.webhook_secret {
        return Ok((
            Some(Signer::from_secret(secret).map_err(|e| bad(e.to_string()))?),
            true,
        ));
    }
    let path = config.data_dir.join("webhook-secret");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // Written by an earlier version under a permissive umask: make it private.
            data_dir::tighten(&path).map_err(bad)?;
            Ok((
                Some(
                    Signer::from_secret(text.trim())
                        .map_err(|e| bad(format!("{}: {e}", path.display())))?,
                ),
                false,
            ))
        }
        Err(_) => Ok((None, false)),
    }
}

/// A started server, and what to tell the operator once.
pub struct Started {
    /// The running server (knows its bound address).
    pub server: HttpServer<ChatServer>,
    /// Printed after the start-up line: e.g. the token generated at first start.
    pub notice: Option<String>,
    /// The store, to close once the server has stopped (see [`Store::close`]).
    pub store: Store,
    /// The connection cap in force (configured, or derived from the open-files limit).
    pub max_connections: usize,
    /// `https` with TLS, else `http`: how to write the address it listens on.
    pub scheme: &'static str,
}

/// Raises the soft open-files limit to the hard limit (the soft default, often 1024, is what
/// a connection flood exhausts first) and returns the limit now in force; below
/// [`FEW_OPEN_FILES`] the operator is warned (the connection caps' defaults are shares of it,
/// `config::file_shares`). Done once per process: every later call (a standby's proxy and
/// its carrier, the server a standby becomes) answers the same limit.
pub(crate) fn raise_open_files_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let limit = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => n,
            Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024),
        };
        if limit < FEW_OPEN_FILES {
            let shares = crate::config::file_shares(limit, false);
            tracing::warn!(
                open_files = limit,
                clients = shares.clients,
                deliveries = shares.deliveries,
                "the open-files limit is low: unless set, the connection caps are small shares \
                 of it; raise it (systemd: LimitNOFILE=65536; a shell: ulimit -n)"
            );
        }
        limit
    })
}

/// An open-files limit below which the server warns at start: its default caps would then
/// hold fewer than about 150 client connections.
const FEW_OPEN_FILES: u64 = 256;

/// Starts the server on `config.bind`.
pub async fn start(config: &Config) -> Result<Started, StartError> {
    loop {
        match start_on(config, None, None).await {
            // Restarted between its open and the read of the state: opened again (waited
            // for, as at any start), where the start used to stop.
            Err(StartError::StoreAway(e)) => {
                tracing::warn!(
                    "the database went away while this server read its state ({e}); opening it again in 1 s"
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            started => return started,
        }
    }
}

/// Starts the server over `backend` when given (a cluster's new leader has already opened
/// it, `crate::cluster`), else over the store the configuration names; on `listener` when
/// given (a cluster instance's, bound since it started: the clients that connect while this
/// server starts wait in its backlog and are served, none is refused), else on `config.bind`,
/// bound at once but listened on only once it serves (a lone server that waits for its
/// database, or reads its state, refuses connections meanwhile, so that a load balancer sends
/// them elsewhere).
pub async fn start_on(
    config: &Config,
    backend: Option<Box<dyn crate::store::Backend>>,
    listener: Option<std::net::TcpListener>,
) -> Result<Started, StartError> {
    // Dropshot's logger, bridged into the process's `tracing` subscriber (crate::logging).
    let log = crate::logging::init(config).map_err(StartError::Log)?;
    // Read before anything is opened, so that a bad pair stops the start with its message.
    // An instance of a cluster: the certificate must name its cluster URL's host
    // (`crate::cluster::own_certificate_name`; `config.bind` is the bound address there).
    let tls = match &config.tls {
        Some(files) => {
            let must = crate::cluster::own_certificate_name(config, config.bind)
                .map_err(StartError::Listen)?;
            Some(crate::tls::server_config(files, must.as_ref()).map_err(StartError::Listen)?)
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    if config.callbacks.allow_loopback {
        // Loud, at the default level: a development switch left on in production would let
        // any client make the server POST to this machine's own services.
        tracing::warn!(
            "NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK is set: callbacks may reach \
            services on this machine's loopback addresses; for local development only"
        );
    }
    let mut api = netapi_chat_api::api_description::<ChatServer>()
        .map_err(|e| StartError::Api(e.to_string()))?;
    api.register(openapi_document)
        .map_err(|e| StartError::Api(e.to_string()))?;
    api.register(xsd_document)
        .map_err(|e| StartError::Api(e.to_string()))?;
    api.register(crate::health::healthz)
        .map_err(|e| StartError::Api(e.to_string()))?;
    api.register(crate::health::readyz)
        .map_err(|e| StartError::Api(e.to_string()))?;
    api.register(crate::channel_socket::channel_socket)
        .map_err(|e| StartError::Api(e.to_string()))?;
    if config.metrics_token.is_some() {
        crate::metrics::install().map_err(StartError::Api)?;
        api.register(crate::metrics::metrics_endpoint)
            .map_err(|e| StartError::Api(e.to_string()))?;
    }
    if config.admin_token.is_some() {
        api.register(crate::admin_api::backup_endpoint)
            .map_err(|e| StartError::Api(e.to_string()))?;
        api.register(crate::admin_api::summary_endpoint)
            .map_err(|e| StartError::Api(e.to_string()))?;
    }
    netapi_chat_runtime::negotiate::set_xml_limits(config.xml.clone());
    netapi_chat_runtime::negotiate::set_body_timeout(config.body_timeout);

    // The port is taken now (a port 0 asked for becomes the one the public URL names, and an
    // address this process cannot bind stops the start before any wait for the database),
    // but listened on only once the server serves: meanwhile clients are refused, so that a
    // load balancer sends them elsewhere. The socket bound is the one served. (A probe bound
    // for its port, dropped, and the port bound again by dropshot raced any other process
    // given the same ephemeral port meanwhile: CI saw "failed to bind".)
    let socket = match listener {
        Some(given) => Socket::Listening(given),
        None => Socket::Reserved(reserve(config.bind)?),
    };
    let bound = socket.local_addr()?;
    let public = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    let (signer, server_wide) = webhook_signer(config)?;
    // Raised before deliveries are set up: their connection cap is a share of it.
    let open_files = raise_open_files_limit();
    let backend = match backend {
        Some(b) => b,
        None => crate::store::open(config)
            .await
            .map_err(|e| StartError::Store(e.to_string()))?,
    };
    // A cluster's leader trusts the client address its standbys forward (with the key).
    let cluster_key = backend.cluster_key();
    // Standbys make this leader's callback attempts only in a cluster that asks for it; a lone
    // server makes every attempt itself, without looking for one.
    let relays = (cluster_key.is_some() && config.standbys_deliver)
        .then(crate::notify::relay::Relays::default);
    let settings = Settings {
        invitation_timeout: config.invitation_timeout,
        adhoc_idle: config.adhoc_idle,
        session_idle: config.session_idle,
        retry: config.retry_policy(),
        callbacks: config.callbacks,
        callback_tls: Arc::new(
            crate::tls::callback_client_config(config.callback_ca_file.as_deref())
                .map_err(StartError::Listen)?,
        ),
        delivery_connections: delivery_caps(config, open_files),
        signer: signer.map(Arc::new),
        own_secrets: !server_wide,
        rotation_window: config.rotation_window,
        limits: crate::chat::Limits {
            // A sender's budget drains over the period its messages are kept.
            sent_bytes: (config.limits.sent_bytes.0, config.retention.keep),
            ..config.limits
        },
        relays: relays.clone(),
    };
    let (store, snapshot) = Store::start(backend).map_err(|e| match e {
        crate::store::NotStarted::Away(e) => StartError::StoreAway(e.to_string()),
        crate::store::NotStarted::Failed(e) => StartError::Store(e.to_string()),
    })?;
    // A store that holds something: not a first start (see `token_verifier`).
    let holds_data = !snapshot.records.is_empty() || !snapshot.outbox.is_empty();
    let closer = store.clone();
    let health = Arc::new(crate::health::Health::new(store.clone()));
    let purger = store.clone();
    let openapi = bytes::Bytes::from(published_document(Urls::new(public.clone()).base()));
    let chat =
        Chat::open(Urls::new(public), settings, store, snapshot).map_err(StartError::Store)?;
    // Messages past retention go in the background (a first round at once).
    crate::retention::start(purger, config.retention);
    let dropshot = ConfigDropshot {
        bind_address: bound,
        default_request_body_max_bytes: config.max_body_bytes,
        ..Default::default()
    };
    let (verifier, token_notice) = token_verifier(config, holds_data)?;
    let rate = Arc::new(RateLimiter::new(config.rate.0, config.rate.1));
    {
        // The notifications a request's change causes count against its token's rate. Runs
        // under the chat core's locks: the token's id only (`TokenVerifier::token_id_of`: a
        // hash of the bearer token, or a JWT's subject id from the verdict cache), never a
        // verification (a token file's scan, its reload, a JWT's signature), which
        // `authorize` already made.
        let rate = Arc::clone(&rate);
        let verifier = Arc::clone(&verifier);
        chat.meter_notifications(Box::new(move |caused| {
            let credentials = netapi_chat_runtime::negotiate::request_credentials();
            if let Ok(bearer) = crate::auth::bearer_token(credentials.as_deref()) {
                rate.charge_notifications(&verifier.token_id_of(bearer), caused);
            }
        }));
    }
    let notice = token_notice;
    let mut methods =
        Methods::from_openapi(netapi_chat_api::OPENAPI_JSON).map_err(StartError::Api)?;
    for path in unpublished_get_paths() {
        methods.add(path, &["GET"]);
    }
    // The socket of a WebSockets notification channel (unpublished: OpenAPI has no WebSocket).
    methods.add_socket(crate::channel_socket::PATH);
    if config.metrics_token.is_some() {
        methods.add(crate::metrics::PATH, &["GET"]);
    }
    if config.admin_token.is_some() {
        for (path, method) in crate::admin_api::ROUTES {
            methods.add(path, &[method]);
        }
    }
    methods = methods.with_head_limit(config.connections.max_header_bytes);
    // Pages of the origins the operator lists may call the API (crate::cors).
    let cors = crate::cors::policy(config.cors_origins.as_ref()).map_err(StartError::Api)?;
    if let Some(cors) = &cors {
        methods = methods.with_cors(Arc::clone(cors));
    }
    // Request metrics and spans are labelled with the route templates the gate knows.
    let routes = Arc::new(methods.clone());
    let request_span: dropshot::RequestSpan =
        Arc::new(crate::logging::request_span(Arc::clone(&routes)));
    let metrics_on = config.metrics_token.is_some();
    // Called inside the request's span, once answered.
    let observer: dropshot::RequestObserver = Arc::new(move |method, path, status, took| {
        crate::logging::answered(status, took);
        if metrics_on {
            crate::metrics::request(method, routes.template(path), status, took)
        }
    });
    let max_connections = config
        .connections
        .max
        .unwrap_or(crate::config::file_shares(open_files, false).clients);
    let limits = ConnectionLimits {
        max_connections: Some(max_connections),
        idle_timeout: Some(config.connections.idle_timeout),
        header_read_timeout: Some(config.connections.header_read_timeout),
        read_buffer_bytes: Some(crate::config::read_buffer_bytes(
            config.connections.max_header_bytes,
        )),
        // HTTP/1.1 only, as TLS's ALPN offers: the head bound and the header timeout are
        // HTTP/1 settings, and an h2c connection would buffer up to a 1 MiB window unbounded
        // by them.
        http2: false,
        write_stall_timeout: Some(config.connections.write_stall),
    };
    let server = ServerBuilder::new(
        api,
        ChatServer {
            chat: Arc::clone(&chat),
            verifier,
            rate,
            auth_failures: Arc::new(AuthFailures::new(
                config.auth_failures.0,
                config.auth_failures.1,
            )),
            health,
            metrics_token: config.metrics_token.clone(),
            openapi,
            sockets: Arc::new(crate::channel_socket::Sockets::share_of(max_connections)),
            waits: Arc::new(crate::rate::Waits::share_of(max_connections)),
            admin: config.admin_token.clone().map(|token| {
                Arc::new(crate::admin_api::Admin {
                    token,
                    data_dir: config.data_dir.clone(),
                    token_file: config.token_file(),
                })
            }),
        },
        log,
    )
    .config(dropshot)
    .tls(tls.map(dropshot::ConfigTls::Dynamic))
    .connection_limits(limits)
    // A sane incoming x-request-id becomes the request's id (its log lines' req_id), and every
    // response carries the id (vendor/dropshot/PATCHES.md, item 8).
    .request_ids(true)
    // One tracing span per request, its req_id that id (crate::logging).
    .request_span(request_span)
    .request_observer(observer);
    // CORS headers on every answer to an allowed origin, the gate's and errors included;
    // `Connection: close` on every answer once a graceful stop began.
    let server = server.response_headers(answer_hook(
        Arc::clone(&chat),
        cors.map(crate::cors::Cors::into_hook),
    ));
    let server = server.listener(socket.listening()?);
    // Proxies in front (NETAPI_CHAT_TRUSTED_PROXIES) name the client; a standby of the
    // cluster (which applied the same rule to its own peer) names it with the cluster key,
    // and that address is final: the client's own X-Forwarded-For is not read again.
    let trusted = Arc::new(config.trusted_proxies.clone());
    let server = server.request_gate(match cluster_key {
        Some(key) => crate::cluster::trusting_forwarders(methods.into_gate(), key, trusted, relays),
        None if trusted.is_empty() => methods.into_gate(),
        None => crate::proxies::trusting(methods.into_gate(), trusted),
    });
    let server = server
        .start()
        .map_err(|e| StartError::Listen(e.to_string()))?;
    Ok(Started {
        server,
        notice,
        store: closer,
        max_connections,
        scheme,
    })
}

/// The response hook ([`dropshot::ResponseHeaders`]), on every answer whoever wrote it (a
/// handler, the request gate, an error): `cors`'s headers; the label of an answer in JSON or
/// XML as the request's `Accept` asks (`text/xml` when it weighs that above
/// `application/xml`: `negotiate::label_answer`); and, on an answer
/// made once a graceful stop began ([`Chat::is_stopping`], looked at as the answer goes out,
/// so a request that arrived before the signal counts too), `Connection: close`, unless the
/// answer already says what its connection does (a `101`'s `upgrade`) or the request came
/// from a standby (its pooled connections are let go by the stop's `Leaving`,
/// `notify::relay`, and a close would be relayed to its client, whose connection to the
/// standby stays good).
fn answer_hook(
    chat: Arc<Chat>,
    cors: Option<dropshot::ResponseHeaders>,
) -> dropshot::ResponseHeaders {
    Arc::new(move |request| {
        let cors = cors.as_ref().and_then(|hook| hook(request));
        let forwarded = request.headers().contains_key(crate::cluster::CLUSTER_KEY);
        let accept = netapi_chat_runtime::negotiate::accept_naming_text(request.headers());
        let chat = Arc::clone(&chat);
        Some(Box::new(move |headers: &mut http::HeaderMap| {
            if let Some(cors) = cors {
                cors(headers);
            }
            no_store(headers);
            netapi_chat_runtime::negotiate::label_answer(accept.as_deref(), headers);
            if chat.is_stopping() && !forwarded && !headers.contains_key(http::header::CONNECTION) {
                headers.insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
        }))
    })
}

/// `Cache-Control: no-store` on an answer that says nothing of caching: every answer but the
/// documents' (which say how long they may be kept, [`DOCUMENT_CACHING`]) is some user's
/// data (a subscription's `signingSecret`, messages) or about a moment (an error, a health
/// probe), and no cache, a browser's included, should keep it (RFC 9111 §5.2.2.5; shared
/// caches already keep nothing asked with `Authorization`; a `404` is kept by heuristics).
pub(crate) fn no_store(headers: &mut http::HeaderMap) {
    headers
        .entry(http::header::CACHE_CONTROL)
        .or_insert(http::HeaderValue::from_static("no-store"));
}

/// The socket a server serves on ([`start_on`]).
enum Socket {
    /// A cluster instance's, listening since the instance started.
    Listening(std::net::TcpListener),
    /// A lone server's: bound (its port taken), not listening until it serves.
    Reserved(socket2::Socket),
}

impl Socket {
    /// The address bound (the real port when port 0 was asked for).
    fn local_addr(&self) -> Result<std::net::SocketAddr, StartError> {
        let addr = match self {
            Socket::Listening(l) => l.local_addr(),
            Socket::Reserved(s) => s.local_addr().and_then(|a| {
                a.as_socket().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP address")
                })
            }),
        };
        addr.map_err(|e| StartError::Listen(e.to_string()))
    }

    /// The listener to serve on: a reserved socket starts listening now.
    fn listening(self) -> Result<std::net::TcpListener, StartError> {
        match self {
            Socket::Listening(l) => Ok(l),
            Socket::Reserved(s) => s
                .listen(LISTEN_BACKLOG)
                .map(|()| s.into())
                .map_err(|e| StartError::Listen(e.to_string())),
        }
    }
}

/// The kernel's queue of connections not accepted yet (clamped to `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

/// A socket bound to `address`, not listening yet ([`Socket::Reserved`]), its error naming the
/// address. `SO_REUSEADDR` as the standard library sets it, so that a restarted server takes
/// its port back while the last one's connections are in `TIME_WAIT`.
fn reserve(address: std::net::SocketAddr) -> Result<socket2::Socket, StartError> {
    let failed = |e: std::io::Error| StartError::Listen(format!("{address}: {e}"));
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        None,
    )
    .map_err(failed)?;
    socket.set_reuse_address(true).map_err(failed)?;
    socket.bind(&address.into()).map_err(failed)?;
    Ok(socket)
}

/// The connection caps of callback deliveries (`NETAPI_CHAT_DELIVERY_CONNECTIONS*`), the total
/// a share of the open-files limit `open_files` unless set.
fn delivery_caps(config: &Config, open_files: u64) -> crate::notify::endpoints::Caps {
    crate::notify::endpoints::Caps {
        per_endpoint: config.delivery_connections_per_endpoint,
        total: config
            .delivery_connections
            .unwrap_or(crate::config::file_shares(open_files, false).deliveries),
    }
}

/// What a standby carries the leader's callback attempts with (`notify::relay`): its own
/// connections under the same caps, trust and callback policy a leader would use.
pub(crate) fn standby_carry(config: &Config) -> Result<crate::notify::relay::Carry, StartError> {
    let open_files = raise_open_files_limit();
    let tls = crate::tls::callback_client_config(config.callback_ca_file.as_deref())
        .map_err(StartError::Listen)?;
    Ok(crate::notify::relay::Carry {
        endpoints: crate::notify::endpoints::Endpoints::new(
            Arc::new(tls),
            delivery_caps(config, open_files),
        ),
        callbacks: config.callbacks,
    })
}
