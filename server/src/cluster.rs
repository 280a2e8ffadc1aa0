//! Several instances on one PostgreSQL database (issue 14), set by `NETAPI_CHAT_CLUSTER_URL`.
//!
//! **One leader, fenced by the database.** The chat core decides from its memory, so exactly
//! one instance may decide at a time: the one whose store connection holds the database's
//! instance lock (`store::postgres::INSTANCE_LOCK`). It serves every request, delivers every
//! notification and fires every timer, exactly as a lone server does. Every other instance is
//! a *standby*: it forwards each request it receives, unchanged, to the leader (found in
//! `store::postgres::LEADER_TABLE`) and relays the answer, WebSocket channels included, so any
//! request may reach any instance behind an ordinary load balancer. A standby polls the lock
//! every [`POLL`]; when the leader is gone (its session ended: a killed process at once, a
//! vanished machine within the server-side keepalive, ~11 s) one standby takes the lock, loads
//! the live state like any start, and serves on the same address.
//!
//! **Architecture Invariant: nothing is written to the database without the lock.** A leader
//! cut off from the database keeps its changes waiting (answering `503`) and must take the lock
//! again before it commits them; if another instance took it meanwhile, the cut-off one never
//! writes again: it answers what waits with `503` and starts over in place as a standby
//! ([`start_over`]). So two instances never decide from two memories.
//!
//! **API Boundary: the forwarded request.** A standby adds the client's address
//! ([`FORWARDED_FOR`]) and the cluster key ([`CLUSTER_KEY`], made by the first leader and kept
//! in the leader table); the leader trusts the address only with the key
//! ([`trusting_forwarders`]), as final, and drops both headers before anything else sees
//! them, so a client cannot pose as another address. The key goes nowhere but to the
//! leader's URL ([`upstream_uri`]; a target that names no path is not forwarded). A request
//! that arrives at a standby already forwarded (with the right key) is not forwarded again
//! (no loops while the leader table is stale): `503`.
//!
//! **TLS between instances.** With `NETAPI_CHAT_TLS_CERT` an instance's cluster URL is
//! `https://` and its standby listener serves HTTPS with the same certificate as its leader
//! would; a standby forwards to an `https://` leader over rustls ([`LeaderConnector`]),
//! verifying the certificate for the URL's host against Mozilla's roots plus
//! `NETAPI_CHAT_CLUSTER_CA_FILE`, so a client's token is never in clear between machines.
//!
//! **Delivery by the standbys.** A standby also dials the leader to make its callback
//! attempts ([`carry_deliveries`], `notify::relay`): the leader decides each notification and
//! hands over only the POST, so a second machine takes delivery's HTTP work off the leader.
//!
//! What a second instance adds is availability (the service survives the loss of an instance
//! or a machine), the standby's HTTP work and the callback attempts; not a second decider:
//! all chat decisions stay on one instance (see ARCHITECTURE.md, "Several instances").

use crate::config::Config;
use crate::notify::relay;
use crate::server::{StartError, Started};
use crate::store::postgres::{HOLDER, LEADER_TABLE, Seat, lock_classid, lock_objid};
use bytes::Bytes;
use dropshot::RequestGate;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use netapi_chat_api::RequestError;
use netapi_chat_runtime::media;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The client's address, added by a standby to the request it forwards.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-netapi-chat-forwarded-for");

/// The cluster key, proving to the leader that a forwarded request comes from a standby.
pub const CLUSTER_KEY: HeaderName = HeaderName::from_static("x-netapi-chat-cluster-key");

/// How often a standby looks at the lock and the leader table.
pub const POLL: Duration = Duration::from_secs(1);

/// Sent by a leader's `/healthz` (`health::healthz`): this process's id ([`instance_id`]), so
/// that the leader can tell its cluster URL reaches it and not another instance
/// ([`check_own_url`]). A standby's own `/healthz` does not send it.
pub const INSTANCE: HeaderName = HeaderName::from_static("x-netapi-chat-instance");

/// How often a leader looks again whether its cluster URL reaches it ([`check_own_url`]).
const OWN_URL_EVERY: Duration = Duration::from_secs(30);

/// This process's instance id: random, made once.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// Seconds a client is asked to wait (`Retry-After`) when a standby cannot reach a leader.
pub const RETRY_AFTER_SECS: u32 = 1;

/// `NETAPI_CHAT_CLUSTER_URL`: where the other instances reach this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterUrl {
    /// `http://` (`https://` when the instance serves TLS) + the address the server is bound
    /// to (which must then be a specific one).
    Auto,
    /// `http://host:port` or `https://host:port`, as given (no trailing slash).
    Given(String),
}

impl ClusterUrl {
    /// `auto`, or an `http://` or `https://` `host:port` URL without path, query or
    /// credentials; `None` otherwise. `https://` makes the standbys speak TLS to this
    /// instance and verify its certificate for `host`, so that a client's bearer token is
    /// never in clear between two machines.
    pub fn parse(text: &str) -> Option<ClusterUrl> {
        if text == "auto" {
            return Some(ClusterUrl::Auto);
        }
        let uri = http::Uri::from_str(text).ok()?;
        let usable = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri
                .authority()
                .is_some_and(|a| a.port_u16().is_some_and(|p| p != 0) && !a.as_str().contains('@'))
            && matches!(uri.path(), "" | "/")
            && uri.query().is_none();
        usable.then(|| ClusterUrl::Given(text.trim_end_matches('/').to_owned()))
    }

    /// Whether this URL is reached over TLS, given whether the instance serves TLS (`auto`
    /// follows the instance).
    pub fn is_https(&self, tls: bool) -> bool {
        match self {
            ClusterUrl::Auto => tls,
            ClusterUrl::Given(url) => url.starts_with("https://"),
        }
    }

    /// The URL, once the server's address is known; `tls`: the instance serves HTTPS
    /// (`NETAPI_CHAT_TLS_CERT`), so `auto` is `https://` + the bound address.
    pub fn resolve(&self, bound: SocketAddr, tls: bool) -> Result<String, String> {
        match self {
            ClusterUrl::Given(url) => Ok(url.clone()),
            // Every address of the machine: none of them is known to reach it from the others
            // (nor, with TLS, to be named by its certificate), so the operator names one.
            ClusterUrl::Auto if bound.ip().is_unspecified() => Err(format!(
                "NETAPI_CHAT_CLUSTER_URL=auto needs NETAPI_CHAT_BIND to name one address (it is {bound}): \
                 set NETAPI_CHAT_CLUSTER_URL to the URL the other instances reach this one at{}",
                if tls {
                    " (https://host:port, its host a name this instance's certificate carries)"
                } else {
                    " (http://host:port)"
                }
            )),
            ClusterUrl::Auto if tls => Ok(format!("https://{bound}")),
            ClusterUrl::Auto => Ok(format!("http://{bound}")),
        }
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterUrl::Auto => f.write_str("auto"),
            ClusterUrl::Given(u) => f.write_str(u),
        }
    }
}

/// What cluster mode needs besides its URL: PostgreSQL (the database is what the instances
/// share), and an `https://` URL (or `auto`) on an instance that serves HTTPS: its port
/// speaks TLS only, so an `http://` URL would only make every forwarded request fail. An
/// `https://` URL on an instance without TLS is accepted: a TLS proxy of the operator's may
/// stand in front of it.
pub fn validate(config: &Config) -> Result<(), String> {
    let Some(url) = &config.cluster_url else {
        return Ok(());
    };
    if config.database_url.is_none() {
        return Err("NETAPI_CHAT_CLUSTER_URL needs NETAPI_CHAT_DATABASE_URL: the instances of a cluster share one PostgreSQL database".to_owned());
    }
    if config.tls.is_some() && !url.is_https(true) {
        return Err(format!(
            "NETAPI_CHAT_CLUSTER_URL={url} with NETAPI_CHAT_TLS_CERT: this instance serves HTTPS only, \
             so the other instances reach it at an https:// URL (or `auto`)"
        ));
    }
    Ok(())
}

/// The host this instance's certificate must name ([`crate::tls::MustName`]): that of its own
/// cluster URL (`auto`: `https://` + `bound`), when it is an instance of a cluster, serves TLS
/// and that URL is `https://`. Every standby verifies the leader's certificate for that host,
/// so an instance whose certificate does not name it is refused at start rather than leading
/// a cluster whose standbys all answer `503`. An `https://` URL on an instance without TLS is
/// a TLS proxy's, whose certificate is not this one: nothing to check. `Err`: the URL cannot
/// be resolved (`auto` on a wildcard address) or its host is no name a certificate can carry.
pub fn own_certificate_name(
    config: &Config,
    bound: SocketAddr,
) -> Result<Option<crate::tls::MustName>, String> {
    let (Some(url), true) = (&config.cluster_url, config.tls.is_some()) else {
        return Ok(None);
    };
    let own = url.resolve(bound, true)?;
    if !own.starts_with("https://") {
        return Ok(None);
    }
    let name = http::Uri::from_str(&own)
        .map_err(|e| e.to_string())
        .and_then(|uri| tls_name(&uri).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!(
                "NETAPI_CHAT_CLUSTER_URL={own}: its host is no name a certificate can carry ({e})"
            )
        })?;
    let url = match url {
        ClusterUrl::Auto => {
            format!("{own} (NETAPI_CHAT_CLUSTER_URL=auto: https:// + the bound address)")
        }
        ClusterUrl::Given(_) => own,
    };
    Ok(Some(crate::tls::MustName { name, url }))
}

/// The leader's request gate: a request that proves it comes from a standby (the cluster key)
/// is handled as coming from the client address the standby names; any other as
/// `NETAPI_CHAT_TRUSTED_PROXIES` says ([`client_of`]). Both cluster headers are removed from
/// every request before `inner` (the method gate) and the handlers see it.
///
/// With `relays` (`NETAPI_CHAT_CLUSTER_DELIVERY=standbys`), a standby's upgrade to
/// [`relay::PATH`] with the key is answered `101` here and the connection carries callback
/// attempts ([`relay::Relays::accept`]); without the key the path is the router's, `404`.
pub fn trusting_forwarders(
    inner: RequestGate,
    key: String,
    trusted: Arc<Vec<crate::proxies::Net>>,
    relays: Option<relay::Relays>,
) -> RequestGate {
    Arc::new(move |request| {
        if let Some(relays) = &relays
            && let Some(answer) = carrier_upgrade(request, &key, relays)
        {
            return Some(answer);
        }
        if let Some(addr) = client_of(request, &key, &trusted) {
            request.extensions_mut().insert(dropshot::ClientAddr(addr));
        }
        inner(request)
    })
}

/// A standby asking to carry callback attempts ([`relay`]): `101` and the upgraded connection
/// handed to `relays`, when `request` is a `GET` of [`relay::PATH`] asking for
/// [`relay::PROTOCOL`] with the cluster key; `503` past [`relay::MAX_CARRIERS`]; `None` for any
/// other request (the key's own check and removal follow in [`client_of`]).
fn carrier_upgrade(
    request: &mut Request<Incoming>,
    key: &str,
    relays: &relay::Relays,
) -> Option<Response<dropshot::Body>> {
    if request.uri().path() != relay::PATH
        || request.method() != http::Method::GET
        // A request a standby forwarded carries the key too (the standby adds it): a client
        // must never become a carrier (it would be sent every user's notifications). A
        // standby's own dial names no client.
        || request.headers().contains_key(&FORWARDED_FOR)
        || !request.headers().get(header::UPGRADE).is_some_and(|v| {
            v.as_bytes()
                .eq_ignore_ascii_case(relay::PROTOCOL.as_bytes())
        })
        || !request
            .headers()
            .get(&CLUSTER_KEY)
            .is_some_and(|given| same_secret(given.as_bytes(), key.as_bytes()))
    {
        return None;
    }
    if !relays.has_room() {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(dropshot::Body::empty())
            .ok();
    }
    let peer = request
        .extensions()
        .get::<dropshot::PeerAddr>()
        .map_or_else(|| "a standby".to_owned(), |p| p.0.to_string());
    let upgrading = hyper::upgrade::on(request);
    let relays = relays.clone();
    tokio::spawn(async move {
        match upgrading.await {
            Ok(upgraded) => relays.accept(TokioIo::new(upgraded), peer),
            Err(e) => {
                tracing::warn!(standby = %peer, error = %e, "a standby's upgrade to carry callback attempts failed")
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, relay::PROTOCOL)
        .body(dropshot::Body::empty())
        .ok()
}

/// The client a leader counts `request` against, when it is not the connection's peer: the
/// address a standby proved with `key` is final (the standby applied the trusted-proxy rule to
/// its own peer already, and passed the client's `X-Forwarded-For` on unchanged, so reading
/// that header again here, where the standby's address may well be a trusted proxy, would let
/// a client name any address it likes); without the key, the rule of
/// [`crate::proxies::client_address`] for the connection's peer.
fn client_of<B>(
    request: &mut Request<B>,
    key: &str,
    trusted: &[crate::proxies::Net],
) -> Option<SocketAddr> {
    if let Some(forwarded) = forwarded_client(request, key) {
        return Some(forwarded);
    }
    let dropshot::PeerAddr(peer) = request.extensions().get::<dropshot::PeerAddr>().copied()?;
    let client = crate::proxies::client_address(peer, request.headers(), trusted);
    (client != peer).then_some(client)
}

/// The client address a standby forwarded `request` for, when it proves itself with `key`;
/// removes both headers whatever they say.
fn forwarded_client<B>(request: &mut Request<B>, key: &str) -> Option<SocketAddr> {
    let headers = request.headers_mut();
    let proven = headers
        .remove(&CLUSTER_KEY)
        .is_some_and(|given| same_secret(given.as_bytes(), key.as_bytes()));
    let client = headers
        .remove(&FORWARDED_FOR)
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse::<SocketAddr>().ok()));
    client.filter(|_| proven)
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Starts this instance: alone (no cluster URL) as [`crate::server::start`] does; in a
/// cluster, as the leader when the database is free, else as a standby that forwards until it
/// can lead (this future then runs until it does).
pub async fn start(config: &Config, drain: &Drain) -> Result<Started, StartError> {
    let Some(cluster_url) = config.cluster_url.clone() else {
        return crate::server::start(config).await;
    };
    // Before anything a standby logs (its forwarding failures, the takeover).
    let _dropshot_logger = crate::logging::init(config).map_err(StartError::Log)?;
    validate(config).map_err(StartError::Store)?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| StartError::Listen(format!("{}: {e}", config.bind)))?;
    // The listening socket is this instance's from its start to its stop, whatever its role:
    // the standby's proxy accepts on one handle of it, and the server this instance starts
    // when it leads is given the other ([`crate::server::start_on`]). Never closed in between,
    // so a client that connects while the role changes waits in the backlog, and is served.
    let (listener, kept) = listener
        .into_std()
        .and_then(|l| Ok((l.try_clone()?, l)))
        .and_then(|(l, kept)| Ok((tokio::net::TcpListener::from_std(l)?, kept)))
        .map_err(|e| StartError::Listen(format!("{}: {e}", config.bind)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartError::Listen(e.to_string()))?;
    let own_url = cluster_url
        .resolve(bound, config.tls.is_some())
        .map_err(StartError::Listen)?;
    // Read before anything is opened, whichever role this instance gets: a bad CA file or
    // certificate pair stops the start with its message.
    let leader_tls = crate::tls::cluster_client_config(config.cluster_ca_file.as_deref())
        .map_err(StartError::Listen)?;
    // The certificate must name this instance's own cluster-URL host, which every standby
    // verifies it for (checked again on every reload).
    let must = own_certificate_name(config, bound).map_err(StartError::Listen)?;
    let own_tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            crate::tls::server_config(files, must.as_ref()).map_err(StartError::Listen)?,
        ))),
        None => None,
    };
    let _ = BOUND.set(bound);
    let mut config = config.clone();
    config.bind = bound;
    let seat = Seat { url: own_url };
    let url = config.database_url.clone().unwrap_or_default();
    let tls = crate::tls::database_client_config(config.database_ca_file.as_deref())
        .map_err(StartError::Store)?;
    let mut watch = Watch {
        client: None,
        tls: Arc::new(tls),
        away: false,
        outage: Outage::default(),
    };
    if let Some(backend) = try_to_lead(&config, &seat, &mut watch).await? {
        if !backend.lead_handed_over() {
            outlive_a_deposed_lease(std::time::Instant::now()).await;
        }
        drop(listener);
        let started = lead(&config, backend, kept).await?;
        tokio::spawn(check_own_url(seat.url.clone(), Arc::new(leader_tls)));
        return Ok(started);
    }
    let cors = crate::cors::policy(config.cors_origins.as_ref()).map_err(StartError::Api)?;
    let leader_tls = Arc::new(leader_tls);
    let forwarder = Arc::new(Forwarder::new(
        seat.url.clone(),
        Arc::clone(&leader_tls),
        cors,
        (config.limits.channel_poll_wait, config.max_body_bytes),
        config.connections.idle_timeout,
        config.trusted_proxies.clone(),
        (
            config.metrics_token.clone(),
            crate::rate::AuthFailures::new(config.auth_failures.0, config.auth_failures.1),
        ),
    ));
    // Know the leader before saying this instance listens, when the database answered the
    // try to lead (one quick look); not while it cannot be reached, where the look would
    // wait out its connection timeout with the port unanswered.
    let mut free = match watch.away {
        false => watch.look(&url, &forwarder).await,
        true => false,
    };
    // Until when the standby looks every `LOOK_AT_MOST_EVERY` rather than every `POLL`.
    let mut fast_until: Option<std::time::Instant> = None;
    let scheme = if own_tls.is_some() { "https" } else { "http" };
    let role = match watch.away {
        true => {
            "standby: the database cannot be reached yet, so requests are answered 503 until it can"
        }
        false => "standby: forwarding to the leader until it can take over",
    };
    println!(
        "netapi-chat listening on {scheme}://{bound} ({role}; reached by the others at {})",
        seat.url
    );
    let proxy = tokio::spawn(serve_standby(
        listener,
        own_tls,
        Arc::clone(&forwarder),
        config.connections,
        drain.clone(),
    ));
    let carrying = match config.standbys_deliver {
        true => Some(tokio::spawn(carry_deliveries(
            Arc::clone(&forwarder),
            Arc::new(crate::server::standby_carry(&config)?),
            drain.clone(),
        ))),
        false => None,
    };
    // A standby takes over without a restart: a token file it would refuse then (missing
    // over a database that holds data, see `server::token_verifier`) is refused as soon as
    // the database says another instance leads (at once, or at the first look that reaches
    // it), rather than at the moment the cluster needs this one to lead; its proxy serves
    // meanwhile. Not before: this instance may be the first of a new cluster, which writes
    // the file when it leads.
    let mut token_file_checked = false;
    loop {
        if !token_file_checked && !free && !watch.away {
            token_file_present(&config).await?;
            token_file_checked = true;
        }
        if free && let Some(backend) = try_to_lead(&config, &seat, &mut watch).await? {
            // The proxy stops accepting (the server started below accepts from the same
            // socket, its backlog meanwhile held by the kernel) and keeps the connections it
            // serves: their requests wait for this instance's server (through the lease wait
            // too: the table names this instance already, so the other standbys send their
            // clients here), are forwarded to it, and each is answered with
            // `Connection: close`, so that its client comes back to the server itself. Before,
            // the proxy was aborted and the socket closed until the server bound it again:
            // its clients' connections were cut and new ones refused (0-4 failed requests per
            // rolling restart in `cargo xtask bench --rolling`).
            forwarder.promote();
            drop(proxy);
            let handed_over = backend.lead_handed_over();
            if !handed_over {
                outlive_a_deposed_lease(std::time::Instant::now()).await;
            }
            if let Some(carrying) = carrying {
                // The old leader is gone: nobody waits for what this carried.
                carrying.abort();
                drain.carrying.send_replace(false);
            }
            match handed_over {
                true => tracing::info!("the leader handed the lead over; this instance leads now"),
                false => tracing::warn!(
                    "the leader is gone; this instance leads now, after waiting out its lease"
                ),
            }
            let key = backend.cluster_key();
            let started = lead(&config, backend, kept).await?;
            // A cluster's store always has a key; without one the leader trusts no standby.
            forwarder.lead(key.unwrap_or_default());
            tokio::spawn(check_own_url(seat.url.clone(), leader_tls));
            return Ok(started);
        }
        let looked = std::time::Instant::now();
        let pace = match fast_until {
            Some(until) if looked < until => LOOK_AT_MOST_EVERY,
            _ => POLL,
        };
        tokio::select! {
            () = tokio::time::sleep(pace) => {}
            () = forwarder.look_now.notified() => {
                fast_until = Some(std::time::Instant::now() + LOOK_FAST_FOR);
                tokio::time::sleep_until((looked + LOOK_AT_MOST_EVERY).into()).await;
            }
        }
        free = watch.look(&url, &forwarder).await;
    }
}

/// Starts the server over `backend`, whose lock this instance took (at its start, or as a
/// standby taking over), on its socket `kept`. The database going away between the lock and
/// the read of the state (restarted, the session ended: `StartError::StoreAway`) takes the
/// lock with the session: the process starts over as a standby ([`start_over`]), which stands
/// by and leads once the database answers, unless another instance did meanwhile. Exiting
/// left the cluster without this instance (and without any, when it was the last: the
/// PostgreSQL operator review, 4 of 4 restarts within 2 s of a leader's death).
async fn lead(
    config: &Config,
    backend: Box<dyn crate::store::Backend>,
    kept: std::net::TcpListener,
) -> Result<Started, StartError> {
    match crate::server::start_on(config, Some(backend), Some(kept)).await {
        Err(StartError::StoreAway(e)) => {
            start_over(&format!(
                "the database went away as this instance took the lead ({e})"
            ));
            Err(StartError::Store(e))
        }
        started => started,
    }
}

/// The shortest time between two looks of a standby at the lock and the leader table when
/// forwards fail ([`Forwarder::look_now`]): one round trip to the database per standby at
/// most ten times a second however many requests fail, and a takeover after a leader that
/// stopped starts within this of the first request that found it gone.
const LOOK_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// How long a standby goes on looking every [`LOOK_AT_MOST_EVERY`] after something said the
/// leader may be stopping ([`Forwarder::look_now`]), before it falls back to [`POLL`]: a
/// leader that lets its standbys go still winds down and closes its store, and the look
/// that came first found the lock held (the hand-over review: 1 s instead of 0.1 s one time
/// in six). Long enough for a leader's stop to end (half its grace of 10 s for delivery,
/// then the drain); a leader that goes on serving costs ten looks a second for this long.
const LOOK_FAST_FOR: Duration = Duration::from_secs(10);

/// A standby's part in delivery (`NETAPI_CHAT_CLUSTER_DELIVERY=standbys`): keeps one
/// connection to the leader known at the moment, upgraded to carry callback attempts
/// ([`relay::carry`]), and dials again (every [`POLL`]) when it ends or the leader changes.
/// On a graceful stop (`drain`) it leaves: the attempts it holds are answered first
/// ([`Drain::stop`] waits for that, within the grace), and it does not dial again.
async fn carry_deliveries(forwarder: Arc<Forwarder>, with: Arc<relay::Carry>, drain: Drain) {
    let mut failed_before: Option<String> = None;
    // After a failed dial: `POLL`, doubled at each failure up to `CARRY_RETRY_AT_MOST` (a
    // leader set to `leader` refuses every time: not a connection and a log line a second).
    let mut wait = POLL;
    loop {
        if *drain.stop.borrow() {
            return;
        }
        if let Some(leader) = forwarder.leader() {
            match dial_to_carry(&forwarder, &leader).await {
                // A stop asked while the dial was under way: not carrying after all.
                Ok(_) if *drain.stop.borrow() => return,
                Ok(io) => {
                    tracing::info!(leader = %leader.url, "carrying callback attempts for the leader");
                    failed_before = None;
                    wait = POLL;
                    drain.carrying.send_replace(true);
                    let ended = tokio::select! {
                        ended = relay::carry(io, Arc::clone(&with), drain.stop.subscribe(), || {
                            forwarder.leader_leaving(&leader.url);
                        }) => {
                            ended.err().map_or_else(|| "closed".to_owned(), |e| e.to_string())
                        }
                        // Another instance leads now while the old one still answers (cut off
                        // from the database, not yet started over): carry for the new one.
                        () = leader_changed(&forwarder, &leader.url) => {
                            "another instance leads now".to_owned()
                        }
                    };
                    drain.carrying.send_replace(false);
                    // The leader may be stopping (it says `Leaving` first): see who leads.
                    forwarder.look_now.notify_one();
                    tracing::info!(
                        leader = %leader.url,
                        why = %ended,
                        "no longer carrying callback attempts for the leader"
                    );
                }
                Err(why) => {
                    // Once per reason: a leader that refuses (set to `leader`) is not news
                    // at every try.
                    if failed_before.as_deref() != Some(why.as_str()) {
                        tracing::info!(leader = %leader.url, why = %why, "cannot carry callback attempts for the leader");
                        failed_before = Some(why);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(CARRY_RETRY_AT_MOST);
                    continue;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The longest a standby waits before dialing the leader again to carry attempts, after
/// failed dials.
const CARRY_RETRY_AT_MOST: Duration = Duration::from_secs(30);

/// Resolves once the leader this standby knows is no longer the one at `url`.
async fn leader_changed(forwarder: &Forwarder, url: &str) {
    loop {
        tokio::time::sleep(POLL).await;
        if forwarder.leader().is_some_and(|l| l.url != url) {
            return;
        }
    }
}

/// A connection to `leader` upgraded to carry callback attempts (`GET` [`relay::PATH`] with
/// the cluster key), or why not.
async fn dial_to_carry(
    forwarder: &Forwarder,
    leader: &Leader,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, String> {
    let path = http::uri::PathAndQuery::from_static(relay::PATH);
    let uri = upstream_uri(&leader.url, path).ok_or("the leader's address does not read")?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or("the leader's address has no host")?;
    let mut connector = forwarder.connector.clone();
    let stream = tokio::time::timeout(
        ANSWER_WITHIN,
        tower_service::Service::call(&mut connector, uri.clone()),
    )
    .await
    .map_err(|_| "no connection in time".to_owned())?
    .map_err(|e| crate::tls::with_causes(&*e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(stream)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn.with_upgrades());
    let request = Request::get(relay::PATH)
        .header(header::HOST, authority)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, relay::PROTOCOL)
        .header(&CLUSTER_KEY, &leader.key)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(ANSWER_WITHIN, send.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("the leader answered {}", answer.status()));
    }
    let upgraded = hyper::upgrade::on(answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(TokioIo::new(upgraded))
}

/// Waits, after taking the lock at `led_at`, until any leader deposed before can no longer
/// answer from its memory: one cut off from the database (a silent link) still serves until
/// its lease lapses, [`LEASE`](crate::store::lease::LEASE) after its last round trip the
/// database answered, which was before its session ended and so before this instance got the
/// lock. Waiting that long before answering anything (requests, timers, deliveries) means
/// a client never reads the old leader's memory after the new leader changed something.
/// Neither side can tell a deposed leader that still runs from one that is gone, so every
/// takeover and every first start of a cluster waits, except after a leader that handed the
/// lead over (a graceful stop that closed every connection before it marked its lead
/// released: `store::Backend::hand_over`); a lone server does not (nobody else writes its
/// database).
async fn outlive_a_deposed_lease(led_at: std::time::Instant) {
    tokio::time::sleep_until((led_at + crate::store::lease::LEASE).into()).await;
}

/// What a leader's request to its own cluster URL's `/healthz` found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnUrl {
    /// This process answered.
    ReachesThis,
    /// Something else answered (another instance, a standby, another service).
    ReachesAnother,
    /// Nothing answered: why.
    Unreachable(String),
}

/// Whether `answer`, the instance id a `/healthz` at the cluster URL sent (if any), is this
/// process's: the rule of [`check_own_url`].
fn own_url_reaches(answer: Option<&str>, own: &str) -> OwnUrl {
    if answer == Some(own) {
        OwnUrl::ReachesThis
    } else {
        OwnUrl::ReachesAnother
    }
}

/// A leader checks that its cluster URL (the one it wrote for the standbys) reaches it: else
/// every standby forwards to nowhere, or to another instance, and answers every client `503`
/// for as long as this one leads, which nothing else would tell the operator. Checked at once
/// and every [`OWN_URL_EVERY`]; logged (at `error`) when it does not, and when it does again.
/// Runs until the process ends (a leader that loses the lead starts over as a new process).
async fn check_own_url(url: String, tls: Arc<rustls::ClientConfig>) {
    let client: Client<LeaderConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(LeaderConnector::new(tls));
    let mut last = OwnUrl::ReachesThis;
    loop {
        let found = match http::Uri::from_str(&format!("{url}/healthz")) {
            Err(e) => OwnUrl::Unreachable(e.to_string()),
            Ok(uri) => match tokio::time::timeout(ANSWER_WITHIN, client.get(uri)).await {
                Err(_) => OwnUrl::Unreachable("no answer within 20 s".to_owned()),
                Ok(Err(e)) => OwnUrl::Unreachable(crate::tls::with_causes(&e)),
                Ok(Ok(answer)) => own_url_reaches(
                    answer
                        .headers()
                        .get(&INSTANCE)
                        .and_then(|v| v.to_str().ok()),
                    instance_id(),
                ),
            },
        };
        // A stopping leader's listener closes before its process ends: not a wrong URL.
        if crate::notify::channel::ending() {
            return;
        }
        if found != last {
            match &found {
                OwnUrl::ReachesThis => tracing::warn!(
                    url = %url,
                    "NETAPI_CHAT_CLUSTER_URL reaches this instance again: standbys can forward to it"
                ),
                OwnUrl::ReachesAnother => tracing::error!(
                    url = %url,
                    "NETAPI_CHAT_CLUSTER_URL reaches another instance or service, not this one, \
                     which leads: every standby forwards there and answers its clients 503; \
                     set it to a URL at which the others reach this instance"
                ),
                OwnUrl::Unreachable(why) => tracing::error!(
                    url = %url,
                    why = %why,
                    "this instance leads, but its NETAPI_CHAT_CLUSTER_URL does not reach it: \
                     every standby answers its clients 503 while it leads; set it to a URL at \
                     which the others reach this instance"
                ),
            }
            last = found;
        }
        tokio::time::sleep(OWN_URL_EVERY).await;
    }
}

/// How long a standby started without its token file waits for it to appear before it
/// refuses to start: instances of a new cluster started together (one deployment) find the
/// file the first one writes once it leads, after its lease wait (2 s) and its start; the
/// upgrade review saw a standby started 2 s after the first exit for want of it.
const TOKEN_FILE_WITHIN: Duration = Duration::from_secs(10);

/// Whether the token file a standby will need when it leads is there (within
/// [`TOKEN_FILE_WITHIN`]); nothing to check with other authentication.
async fn token_file_present(config: &Config) -> Result<(), StartError> {
    if !matches!(config.auth, crate::config::AuthConfig::TokenFile(_)) {
        return Ok(());
    }
    let path = config
        .token_file()
        .unwrap_or_else(|| config.data_dir.join("tokens"));
    let until = tokio::time::Instant::now() + TOKEN_FILE_WITHIN;
    let mut said = false;
    while !path.exists() {
        if tokio::time::Instant::now() >= until {
            return Err(StartError::Auth(format!(
                "the token file {} does not exist: every instance of a cluster needs the same \
                 token file as the leading one (copy it, or fix NETAPI_CHAT_TOKEN_FILE); a \
                 standby without it could not take over",
                path.display()
            )));
        }
        if !said {
            tracing::warn!(
                "the token file {} does not exist yet; waiting up to {} s for it (the first \
                 instance of a new cluster writes it when it leads)",
                path.display(),
                TOKEN_FILE_WITHIN.as_secs()
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One try to open the store and lead: `None` while another instance leads, or while the
/// database cannot be reached (`watch` says so in the log). Tried once, not until the database
/// answers as a lone server does: this instance listens from its start, and its proxy answers
/// `503` (or forwards to the leader it knows) between tries, where waiting here held its
/// clients' connections unanswered for as long as the database was away.
async fn try_to_lead(
    config: &Config,
    seat: &Seat,
    watch: &mut Watch,
) -> Result<Option<Box<dyn crate::store::Backend>>, StartError> {
    use crate::store::Attempt;
    match crate::store::open_once_unless_led(config, Some(seat.clone()))
        .await
        .map_err(|e| StartError::Store(e.to_string()))?
    {
        Attempt::Opened(backend) => {
            watch.reached(Ok(()));
            Ok(Some(backend))
        }
        Attempt::Busy => {
            watch.reached(Ok(()));
            Ok(None)
        }
        Attempt::Unreachable(e) => {
            watch.reached(Err(e.to_string()));
            Ok(None)
        }
    }
}

/// A standby's view of the database: one connection, kept between looks.
struct Watch {
    client: Option<tokio_postgres::Client>,
    tls: Arc<rustls::ClientConfig>,
    /// Whether the last look or try could not reach the database (said once in the log, and
    /// once again when it can).
    away: bool,
    /// Whether a leader held the lock when this standby lost its database connection, and
    /// since when it has found the lock free since ([`head_start_over`]).
    outage: Outage,
}

/// What a standby saw of the lock around losing its own database connection: the signature
/// of a database restart (or a cut between it and the database), after which the leader
/// reconnects and takes its lock again unless a standby took it first ([`head_start_over`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outage {
    /// The last look that reached the database found the lock held.
    held: bool,
    /// The connection was lost while `held`: the leader may be reconnecting.
    lost_while_held: bool,
    /// When the lock was first found free after that loss.
    free_since: Option<std::time::Instant>,
}

/// How long a standby leaves a lock free after its own connection came back from an outage
/// during which a leader held it, before it takes it: the head start of the last leader,
/// which lost its session in the same outage and reconnects (on its next request or
/// heartbeat, within about a second here) with its state in memory. Taken by a standby
/// instead, a database restart became a failover: the old leader started over as a standby,
/// the new one waited out the lease, timers fired late (the cluster review of 2026-12-07: 3
/// of 4 restarts, the first `2xx` 2.2–2.3 s after the database was back against 0.84 s when
/// the lead stayed). Bounded by a second lease: a leader that died in the same outage costs
/// its successor this much more.
const HEAD_START: Duration = crate::store::lease::LEASE;

/// The rule: whether a standby may take the lock it found free now (`free`) at `now`, given
/// what it saw around its last loss of the database (`outage`, updated here). A lock free
/// while no leader held it when the connection went (a leader killed: the standby's own
/// session stayed up) is taken at once.
fn head_start_over(outage: &mut Outage, free: bool, now: std::time::Instant) -> bool {
    if !free {
        *outage = Outage {
            held: true,
            ..Outage::default()
        };
        return false;
    }
    outage.held = false;
    if !outage.lost_while_held {
        return true;
    }
    let since = *outage.free_since.get_or_insert(now);
    if now.duration_since(since) < HEAD_START {
        return false;
    }
    *outage = Outage::default();
    true
}

impl Outage {
    /// The standby's connection to the database was lost (or never made).
    fn lost(&mut self) {
        if self.held || self.lost_while_held {
            self.lost_while_held = true;
            self.free_since = None;
        }
    }
}

impl Watch {
    /// Logs a change between reaching the database and not: once per outage, not per look.
    fn reached(&mut self, result: Result<(), String>) {
        match (result, self.away) {
            (Err(e), false) => {
                tracing::warn!(
                    "cannot reach the database ({e}); until it can, requests are forwarded to \
                     the leader last known, or answered 503 while none is known"
                );
                self.away = true;
            }
            (Ok(()), true) => {
                tracing::info!("the database can be reached again");
                self.away = false;
            }
            _ => {}
        }
    }

    /// Reads the leader table into `forwarder` and says whether the instance lock is free. A
    /// database it cannot reach keeps what was known (forwarding goes on; the leader, if it
    /// still runs, sees the same database) and answers "not free".
    async fn look(&mut self, url: &str, forwarder: &Forwarder) -> bool {
        if self.client.is_none() {
            match connect(url, &self.tls).await {
                Ok(client) => self.client = Some(client),
                Err(e) => {
                    self.outage.lost();
                    self.reached(Err(e));
                    return false;
                }
            }
        }
        let Some(client) = &self.client else {
            return false;
        };
        let looked = tokio::time::timeout(POLL * 5, async {
            let row = client
                .query_one(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE {HOLDER}), \
                         to_regclass('{LEADER_TABLE}') IS NOT NULL, $1::BIGINT"
                    ),
                    // `$1` only numbers the parameters as HOLDER expects them ($2, $3).
                    &[&0i64, &lock_classid(), &lock_objid()],
                )
                .await?;
            let (held, table): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
            let leader = if table {
                client
                    .query_opt(&format!("SELECT url, key FROM {LEADER_TABLE}"), &[])
                    .await?
                    .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()?
            } else {
                None
            };
            Ok::<_, tokio_postgres::Error>((held, leader))
        })
        .await;
        match looked {
            Ok(Ok((held, leader))) => {
                forwarder
                    .set_leader(leader.map(|(url, key): (String, String)| Leader { url, key }));
                // Free, the try to lead says whether the store can be opened (a read-only
                // database answers this look but refuses the store: no "reached" then).
                if held {
                    self.reached(Ok(()));
                }
                head_start_over(&mut self.outage, !held, std::time::Instant::now())
            }
            Ok(Err(e)) => {
                self.client = None;
                self.outage.lost();
                self.reached(Err(crate::tls::with_causes(&e)));
                false
            }
            Err(_) => {
                self.client = None;
                self.outage.lost();
                self.reached(Err(format!("no answer within {} s", (POLL * 5).as_secs())));
                false
            }
        }
    }
}

/// A connection for a standby's looks (bounded waits; why not, when the database is away),
/// with the store's TLS rule.
async fn connect(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    config
        .connect_timeout(Duration::from_secs(5))
        .application_name("netapi-chat standby");
    let tls = crate::store::postgres::connector_for(&mut config, Arc::clone(tls));
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| crate::tls::with_causes(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Where the leader is reached, and the key that proves a standby to it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leader {
    url: String,
    key: String,
}

/// Longest a standby waits for a TCP connection to the leader, and then for its TLS
/// handshake: the leader is on the operator's network, so anything slower is a leader that
/// cannot be reached (the client gets `503` and retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a standby waits for the head of the leader's answer to a request other than a long
/// poll: the leader answers every request within `store::answer_within` (15 s) even while its
/// database is unreachable, so past this the leader is stuck (a stopped or frozen process
/// whose database session still holds the lead, so nobody takes over) and the client gets
/// `503` to retry, not a request that hangs.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// How long a standby waits for the leader's `/readyz`: the leader answers it within its
/// probe's bound (`health::PROBE_TIMEOUT`), and a load balancer's probe gives up within a few
/// seconds, so a frozen leader must make the standby not ready well before [`ANSWER_WITHIN`].
const READY_WITHIN: Duration =
    Duration::from_secs(crate::health::PROBE_TIMEOUT.as_secs().saturating_add(1));

/// How long a standby waits for the head of the leader's answer to `request`: a long poll
/// (`POST …/notifications` of a channel) may wait `poll_wait` before its answer starts,
/// `/readyz` [`READY_WITHIN`], the rest [`ANSWER_WITHIN`].
fn answer_within<B>(request: &Request<B>, poll_wait: Duration) -> Duration {
    if request.uri().path() == "/readyz" {
        return READY_WITHIN;
    }
    let poll = request.method() == http::Method::POST
        && request.uri().path().starts_with("/notificationchannel/")
        && request.uri().path().ends_with("/notifications");
    if poll {
        poll_wait.saturating_add(ANSWER_WITHIN)
    } else {
        ANSWER_WITHIN
    }
}

/// The leader did not start its answer within this (for the standby's log, [`Forwarder::report`]).
#[derive(Debug)]
struct LeaderSilent(Duration);

impl std::fmt::Display for LeaderSilent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer started within {} s", self.0.as_secs_f64())
    }
}

impl std::error::Error for LeaderSilent {}

/// What a client is told when the leader did not start its answer within [`answer_within`].
const LEADER_SILENT: &str = "the leading instance did not answer in time; it may be stuck while \
     it still holds the lead, and may still carry the request out: repeat a create with the same \
     clientCorrelator";

/// A standby's forwarding: the leader as last read, and one pooled HTTP client to it.
struct Forwarder {
    own_url: String,
    leader: RwLock<Option<Leader>>,
    /// The pooled client to the leader; a new one (an empty pool) once the leader says it
    /// stops ([`Forwarder::leader_leaving`]).
    client: RwLock<Client<LeaderConnector, ClientBody>>,
    /// How long its pool keeps an idle connection ([`pool_idle_timeout`]).
    pool_idle: Duration,
    /// The same client without a pool (a connection per request), for a leader that said it
    /// stops ([`Forwarder::leader_leaving`]) and is still the one to forward to once a
    /// request's hold ran out.
    fresh: Client<LeaderConnector, ClientBody>,
    /// The leader said it stops (`Leaving`, on the connection that carries its callback
    /// attempts): its listener closes as soon as every standby answered, and its drain
    /// closes the kept-alive connections of the pool that are idle. A request written into
    /// one as it closes is cut, and so is one written into a connection the kernel queued
    /// on the listener just after the close took its backlog; with a body, neither can go
    /// again (the leader may have read it). So nothing new goes to that leader: a request
    /// waits for the next one ([`Forwarder::holds`]), at most [`HOLD_FOR_THE_NEXT_LEADER`],
    /// as one it refused does, and past that goes on a connection of its own
    /// ([`Forwarder::client_for`]). Holds the count of [`Forwarder::changes`] it was said
    /// under, plus one (`0`: none), like `refused`.
    leaving: std::sync::atomic::AtomicU64,
    /// The client's connector, for the connection that carries callback attempts
    /// ([`carry_deliveries`]), which is upgraded and so not pooled.
    connector: LeaderConnector,
    /// The last reason a forward failed that was logged, so a leader that stays unreachable
    /// (or untrusted) is reported once, not once per request.
    failure: std::sync::Mutex<Option<String>>,
    /// Whether `failure` holds one.
    failing: std::sync::atomic::AtomicBool,
    /// Rung when a forward to the leader fails (or the connection carrying its attempts
    /// ends): the leader may have stopped, so the standby looks at the lock at once rather
    /// than at its next [`POLL`] (at most every [`LOOK_AT_MOST_EVERY`]), and a leader that
    /// handed the lead over is replaced within a fraction of a second.
    look_now: tokio::sync::Notify,
    /// The CORS policy (`NETAPI_CHAT_CORS_ORIGINS`), so that the answers a standby makes
    /// itself (a `503` while no leader can be used) are readable by a page the leader's
    /// answers are readable by.
    cors: Option<Arc<crate::cors::Cors>>,
    /// `NETAPI_CHAT_CHANNEL_POLL_WAIT`: how long a long poll may wait before the leader
    /// starts its answer ([`answer_within`]).
    poll_wait: Duration,
    /// `NETAPI_CHAT_MAX_BODY_BYTES` (the same on every instance): a request that asks for
    /// `100 Continue` announcing a longer body is refused here ([`refused_before_continue`]).
    max_body_bytes: usize,
    /// `NETAPI_CHAT_TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client this standby
    /// forwards for ([`crate::proxies::client_address`]).
    trusted_proxies: Vec<crate::proxies::Net>,
    /// `NETAPI_CHAT_METRICS_TOKEN`: opens this standby's own `/metrics` ([`standby_metrics`]).
    metrics_token: Option<String>,
    /// This instance's part, which the proxy's connections follow: standing by, taking the
    /// lead, then leading, when what is still forwarded goes to this instance's own server.
    role: tokio::sync::watch::Sender<Role>,
    /// Counts the changes of the leader to forward to (another instance named, this one
    /// taking the lead): what waits for the next leader ([`Forwarder::changed_since`]) goes
    /// on when it moves.
    changes: tokio::sync::watch::Sender<u64>,
    /// The leader refused a connection since the last forward that worked: it is likely
    /// stopping (its listener closed), so requests wait for the next leader, at most
    /// [`HOLD_FOR_THE_NEXT_LEADER`], rather than being answered `503`. Holds the count of
    /// [`Forwarder::changes`] the refusal was seen under, plus one (`0`: none), so that a
    /// refusal by a leader already replaced (a forward that was under way at the change)
    /// holds nothing.
    refused: std::sync::atomic::AtomicU64,
    /// The per-address authentication-failure limit for that token, as the leader counts
    /// wrong operator tokens (`rate::AuthFailures::operator_token`): a standby's `/metrics` is
    /// no cheaper a place to guess it.
    auth_failures: crate::rate::AuthFailures,
}

impl Forwarder {
    /// No leader yet; `tls`: what an `https://` leader's certificate is verified against;
    /// `poll_wait`, `max_body_bytes`: the settings of those fields;
    /// `leader_idle`: `NETAPI_CHAT_IDLE_TIMEOUT_SECS`, after which the leader (same setting on
    /// every instance) closes a keep-alive connection of this standby's pool
    /// ([`pool_idle_timeout`]).
    fn new(
        own_url: String,
        tls: Arc<rustls::ClientConfig>,
        cors: Option<Arc<crate::cors::Cors>>,
        (poll_wait, max_body_bytes): (Duration, usize),
        leader_idle: Duration,
        trusted_proxies: Vec<crate::proxies::Net>,
        (metrics_token, auth_failures): (Option<String>, crate::rate::AuthFailures),
    ) -> Forwarder {
        let pool_idle = pool_idle_timeout(leader_idle);
        Forwarder {
            own_url,
            leader: RwLock::new(None),
            client: RwLock::new(pooled(LeaderConnector::new(Arc::clone(&tls)), pool_idle)),
            pool_idle,
            fresh: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(LeaderConnector::new(Arc::clone(&tls))),
            connector: LeaderConnector::new(tls),
            failure: std::sync::Mutex::new(None),
            failing: std::sync::atomic::AtomicBool::new(false),
            look_now: tokio::sync::Notify::new(),
            cors,
            poll_wait,
            max_body_bytes,
            trusted_proxies,
            metrics_token,
            auth_failures,
            role: tokio::sync::watch::Sender::new(Role::Standby),
            changes: tokio::sync::watch::Sender::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
            leaving: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The leader at `url` said it stops: nothing more is sent to it
    /// ([`Forwarder::leaving`]), until the leader to forward to changes; and its pool is let
    /// go, so that its idle connections close now, each an end the stopping leader reads at
    /// once. (Kept, the ones the pool had opened and never used, hyper's client having raced
    /// a connect against a connection coming free, held the leader's drain for the second
    /// it gives a connection to send its first request: the lead changed 1 s late in 2 of 15
    /// rolling restarts, the clients held meanwhile.)
    fn leader_leaving(&self, url: &str) {
        // The count first: a leader named after it is a change, which the mark does not
        // reach (read the other way round, a leader set in between would be marked).
        let now = *self.changes.borrow();
        if self.leader().is_some_and(|l| l.url == url) {
            self.leaving
                .store(now.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
            let fresh = pooled(self.connector.clone(), self.pool_idle);
            *self.client.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
    }

    /// Whether the leader of change count `now` said it stops ([`Forwarder::leaving`]).
    fn is_leaving(&self, now: u64) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Relaxed) == now.wrapping_add(1)
    }

    /// Whether a request for the leader of change count `now` waits for the next leader
    /// before anything of it is sent: that leader refused a connection, or said it stops.
    fn holds(&self, now: u64) -> bool {
        self.refuses(now) || self.is_leaving(now)
    }

    /// The client for a forward to the leader of change count `now`: the pooled one, or
    /// once that leader said it stops (and a request's hold ran out with it still the
    /// leader), the one that opens a connection per request.
    fn client_for(&self, now: u64) -> Client<LeaderConnector, ClientBody> {
        match self.is_leaving(now) {
            true => self.fresh.clone(),
            false => self
                .client
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The leader to forward to changed: requests waiting for that go on.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The leader of change count `seen` refused a connection.
    fn was_refused(&self, seen: u64) {
        self.refused
            .store(seen.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the leader of change count `now` has refused a connection (and none of its
    /// forwards worked since).
    fn refuses(&self, now: u64) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed) == now.wrapping_add(1)
    }

    /// Waits until the leader to forward to changes from the one of count `seen`, at most
    /// until `until`.
    async fn changed_since(&self, seen: u64, until: tokio::time::Instant) {
        let mut changes = self.changes.subscribe();
        let _ = tokio::time::timeout_at(until, changes.wait_for(|n| *n != seen)).await;
    }

    /// This instance took the lead and starts its server: the proxy accepts no more
    /// connections ([`serve_standby`]), and what its connections send waits for
    /// [`Forwarder::lead`] ([`Forwarder::leader_now`]) rather than going to the leader this
    /// one replaces.
    fn promote(&self) {
        self.role.send_replace(Role::Promoting);
        self.changed();
    }

    /// This instance's server serves (its cluster key `key`): what the proxy's connections
    /// still send is forwarded to it, at this instance's own cluster URL.
    fn lead(&self, key: String) {
        self.role.send_replace(Role::Leading(key));
        self.changed();
    }

    /// Whether this instance leads (or is starting to): the proxy's connections are then each
    /// closed after their next answer, their clients coming back to the server itself.
    fn leads(&self) -> bool {
        !matches!(*self.role.borrow(), Role::Standby)
    }

    /// [`Forwarder::leader`], once this instance's own server serves when it is starting
    /// (at most [`PROMOTION_WAIT`]).
    async fn leader_now(&self) -> Option<Leader> {
        let mut role = self.role.subscribe();
        let started = role.wait_for(|r| !matches!(r, Role::Promoting));
        let _ = tokio::time::timeout(PROMOTION_WAIT, started).await;
        self.leader()
    }

    /// Logs why a forward to `leader` failed, when that is news (see [`Forwarder::failure`]).
    fn report(&self, leader: &Leader, error: &(dyn std::error::Error + 'static)) {
        let why = crate::tls::with_causes(error);
        // A leader that runs but advertised a URL nothing listens on refuses every forward
        // for as long as it leads: say so where the operator looks (the leader logs an error
        // about its URL too).
        let hint = if matches!(
            crate::tls::stopped_by(error),
            Some(crate::tls::Stopped::Refused)
        ) {
            "; if the leader is running, its NETAPI_CHAT_CLUSTER_URL does not reach it"
        } else {
            ""
        };
        let line = format!(
            "forwarding to the leader at {} failed: {why}{hint}",
            leader.url
        );
        let mut last = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(line.as_str()) {
            tracing::warn!("{line}");
            *last = Some(line);
        }
        self.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.look_now.notify_one();
    }

    /// Forgets the last failure logged, after a forward that worked (a load only while one
    /// is remembered: the lock is not taken on every request).
    fn recovered(&self) {
        self.refused.store(0, std::sync::atomic::Ordering::Relaxed);
        if self
            .failing
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The leader as the table names it now (see [`Forwarder::leader`]).
    fn set_leader(&self, leader: Option<Leader>) {
        let changed = match self.leader.write() {
            Ok(mut l) if *l != leader => {
                *l = leader;
                true
            }
            _ => false,
        };
        if changed {
            self.changed();
        }
    }

    /// The leader to forward to (`None`: unknown, or this instance itself, which the table
    /// can still name for a moment after this one started over as a standby, unless this
    /// instance leads now).
    fn leader(&self) -> Option<Leader> {
        match &*self.role.borrow() {
            Role::Leading(key) => {
                return Some(Leader {
                    url: self.own_url.clone(),
                    key: key.clone(),
                });
            }
            Role::Standby | Role::Promoting => {}
        }
        let leader = self.leader.read().ok()?.clone()?;
        (leader.url != self.own_url).then_some(leader)
    }
}

/// A cluster instance's part, as its standby's proxy sees it ([`Forwarder::role`]).
#[derive(Debug)]
enum Role {
    /// Forwarding to the leader the table names.
    Standby,
    /// Took the lead; its server is starting on the proxy's socket.
    Promoting,
    /// Its server serves; the key its forwards carry.
    Leading(String),
}

/// The pooled client a standby forwards with: idle connections kept `pool_idle`
/// ([`pool_idle_timeout`]), at most 64.
fn pooled(connector: LeaderConnector, pool_idle: Duration) -> Client<LeaderConnector, ClientBody> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle)
        .pool_max_idle_per_host(64)
        // A request given a pooled connection found closed before any of it was written goes
        // again on another (hyper's default, stated because the pool relies on it): safe for
        // any method, the leader saw nothing of it. One that was written is never sent again
        // (a create would be carried out twice).
        .retry_canceled_requests(true)
        .build(connector)
}

/// Longest a request waits at a standby for the next leader once the leader refused a
/// connection (likely stopping: a rolling restart) or said it stops (`Leaving`), rather than
/// being answered `503` at once or written into a listener about to close:
/// a leader that hands the lead over is replaced within about 0.2 s of closing its listener,
/// and one killed within its 2 s lease and a start. A request with a body that was refused
/// itself is answered `503` (its body is gone); one without goes again to the next leader.
const HOLD_FOR_THE_NEXT_LEADER: Duration = Duration::from_secs(3);

/// Longest a request on one of the proxy's connections waits for this instance's own server
/// to start once it took the lead (the 2 s lease wait after a leader that did not hand over,
/// then reading the store's state); after that, it is answered as when no leader can be
/// reached (`503`, `Retry-After`).
const PROMOTION_WAIT: Duration = Duration::from_secs(10);

/// How long a standby keeps an idle connection to the leader for reuse: half the leader's
/// idle timeout `leader_idle` (at most 30 s). The leader closes a connection idle for
/// `leader_idle`, counted from the end of its handler, a little before the standby's count
/// starts (once the answer has arrived); a connection pooled as long as that or longer was
/// reused just as the leader closed it, and the request written to it failed (`503`, "the
/// instance that leads cannot be reached", for a healthy leader). Half leaves a margin of
/// `leader_idle / 2` for that difference and for the close to reach the standby.
fn pool_idle_timeout(leader_idle: Duration) -> Duration {
    (leader_idle / 2).min(Duration::from_secs(30))
}

/// The connections of a standby to the leader: TCP for an `http://` leader, TLS (rustls) over
/// it for an `https://` one, the certificate verified for the host of the leader's URL. One
/// connector for both, so that the client's pool keeps serving a mixed cluster whatever
/// scheme the leader row names.
#[derive(Clone)]
struct LeaderConnector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl LeaderConnector {
    /// TCP (no Nagle, a connect timeout of [`CONNECT_TIMEOUT`]), then TLS with `tls` for an
    /// `https://` URL: the one connector of the standby's forwards and of the leader's check
    /// of its own URL ([`check_own_url`]).
    fn new(tls: Arc<rustls::ClientConfig>) -> LeaderConnector {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // `https://` leaders too: TLS is added on top.
        tcp.enforce_http(false);
        LeaderConnector {
            tcp,
            tls: tokio_rustls::TlsConnector::from(tls),
        }
    }
}

/// What a failed connection to the leader says (for the log).
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for LeaderConnector {
    type Response = TokioIo<LeaderStream>;
    type Error = ConnectError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, ConnectError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ConnectError>> {
        tower_service::Service::<http::Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (mut tcp, tls) = (self.tcp.clone(), self.tls.clone());
        Box::pin(async move {
            let name = match uri.scheme_str() {
                Some("https") => Some(tls_name(&uri)?),
                _ => None,
            };
            let stream = tower_service::Service::call(&mut tcp, uri)
                .await?
                .into_inner();
            let Some(name) = name else {
                return Ok(TokioIo::new(LeaderStream::Plain(stream)));
            };
            let secured = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, stream))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake within 2 s")
                })??;
            Ok(TokioIo::new(LeaderStream::Tls(Box::new(secured))))
        })
    }
}

/// The name an `https://` leader's certificate must hold: its URL's host, a DNS name or an IP
/// address (matched against an IP SAN).
fn tls_name(uri: &http::Uri) -> Result<rustls::pki_types::ServerName<'static>, ConnectError> {
    use rustls::pki_types::ServerName;
    let host = uri.host().ok_or("the leader's URL has no host")?;
    // An IPv6 literal is written in brackets in a URL, not in a certificate.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => Ok(ServerName::try_from(host.to_owned())?),
    }
}

/// A connection to the leader, plain or TLS (see [`LeaderConnector`]).
enum LeaderStream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl Connection for LeaderStream {
    fn connected(&self) -> Connected {
        match self {
            LeaderStream::Plain(s) => s.connected(),
            LeaderStream::Tls(s) => s.get_ref().0.connected(),
        }
    }
}

impl tokio::io::AsyncRead for LeaderStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            LeaderStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            LeaderStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for LeaderStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            LeaderStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            LeaderStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            LeaderStream::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            LeaderStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            LeaderStream::Plain(s) => s.is_write_vectored(),
            LeaderStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            LeaderStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            LeaderStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            LeaderStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            LeaderStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The body of what a standby answers: the leader's, streamed, or its own.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Accepts connections and forwards their requests until aborted (which drops every
/// connection it serves), under the same connection limits as the leader's, by the same code
/// (vendored dropshot's tracker, PATCHES.md 17 and 19): at most `max` connections, the idle
/// longest shed at the cap, the idle timeout, the write-stall timeout, and a connection asked
/// to go dropped once nothing moves on it. (Before, a standby had no idle timeout and closed
/// every new connection at the cap: idle connections, which cost a client nothing, took it
/// out of service.) With `tls` (`NETAPI_CHAT_TLS_CERT`) every connection is HTTPS, with the
/// certificate the leader serves: clients reach a standby through the same load balancer and
/// URLs as the leader, so a standby speaking plain HTTP would break them (or, behind a TCP
/// balancer, carry their tokens in clear). The TLS handshake must end within
/// `header_read_timeout`.
async fn serve_standby(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    forwarder: Arc<Forwarder>,
    limits: crate::config::Connections,
    drain: Drain,
) {
    // A standby's share of the open-files limit: each request it forwards holds a
    // connection to the leader too.
    let max_connections = limits.max.unwrap_or_else(|| {
        crate::config::file_shares(crate::server::raise_open_files_limit(), true).clients
    });
    let tracker = dropshot::ConnectionTracker::new(dropshot::ConnectionLimits {
        max_connections: Some(max_connections),
        idle_timeout: Some(limits.idle_timeout),
        header_read_timeout: Some(limits.header_read_timeout),
        read_buffer_bytes: Some(crate::config::read_buffer_bytes(limits.max_header_bytes)),
        http2: false,
        write_stall_timeout: Some(limits.write_stall),
    });
    let mut connections = tokio::task::JoinSet::new();
    let mut stopping = drain.stop.subscribe();
    let mut role = forwarder.role.subscribe();
    loop {
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => Some(a),
            () = stopped(&mut stopping) => None,
            () = promoted(&mut role) => {
                // This instance took the lead: its server accepts from the same socket (the
                // backlog included); the connections open here go on until each is answered
                // and closed (`serve_one`), or stopped with the process (`drain`).
                drop(listener);
                while connections.join_next().await.is_some() {}
                drain.done.send_replace(true);
                return;
            }
        };
        // At the cap, room is made (or waited for) for the client that arrived, as the leader
        // does; in a `select!` of its own, so that reaping cannot drop the accepted connection.
        // Biased: a connection accepted as the stop arrives is served when there is room
        // (`make_room` is ready at once then); only one waiting at the cap gives way to the
        // stop. (Unbiased, one connection in ten queued at a stop was dropped unread and its
        // client reset: the two branches were both ready and picked at random.)
        let room = match &accepted {
            Some(_) => tokio::select! {
                biased;
                () = tracker.make_room() => true,
                () = stopped(&mut stopping) => false,
            },
            None => false,
        };
        let serve =
            |stream: tokio::net::TcpStream, peer, connections: &mut tokio::task::JoinSet<()>| {
                let _ = stream.set_nodelay(true);
                let conn = tracker.register();
                let stream = conn.watch(stream);
                let forwarder = Arc::clone(&forwarder);
                let tls = tls.clone();
                let stopping = drain.stop.subscribe();
                let header_read_timeout = limits.header_read_timeout;
                connections.spawn(async move {
                    match tls {
                        None => serve_one(stream, forwarder, peer, conn, stopping).await,
                        Some(acceptor) => {
                            // Busy during its handshake (bounded by the header timeout), so that
                            // it is not picked for shedding, which only a served connection acts
                            // on; its first request is awaited from then on, also at a stop.
                            let handshaking = conn.state.begin_handshake();
                            let handshake = acceptor.accept(stream);
                            let shaken = tokio::time::timeout(header_read_timeout, handshake).await;
                            drop(handshaking);
                            if let Ok(Ok(stream)) = shaken {
                                serve_one(stream, forwarder, peer, conn, stopping).await;
                            }
                        }
                    }
                });
            };
        let Some(accepted) = accepted.filter(|_| room) else {
            // A graceful stop: the clients already in the listen backlog (their handshake
            // done, their request likely sent) are served, as many as the cap has room for
            // (closing the listener resets them: ops review O10); then no new connection,
            // and each open one finishes the request it is forwarding, or reads the first
            // one it was opened for (`serve_one`), then this says it is done.
            dropshot::take_backlog(
                listener,
                || tracker.has_room(),
                |stream, peer| serve(stream, peer, &mut connections),
            );
            while connections.join_next().await.is_some() {}
            drain.done.send_replace(true);
            return;
        };
        let Ok((stream, peer)) = accepted else {
            // Out of descriptors or similar: give it a moment rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        serve(stream, peer, &mut connections);
    }
}

/// Serves the requests of one client connection (plain or TLS) of a standby, WebSocket
/// upgrades included, counted by `conn` (its requests in flight, for the idle timeout and
/// shedding) until it closes.
async fn serve_one<S>(
    stream: S,
    forwarder: Arc<Forwarder>,
    peer: SocketAddr,
    conn: dropshot::ConnGuard,
    stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::clone(&conn.state);
    let header_read_timeout = conn.tracker_limits().header_read_timeout;
    let read_buffer = conn.tracker_limits().read_buffer_bytes;
    let service = hyper::service::service_fn(move |request| {
        let forwarder = Arc::clone(&forwarder);
        // Not idle (not to be shed, no idle timeout) while this request is forwarded.
        let in_flight = state.begin_request();
        let answered = Arc::clone(&state);
        async move {
            // Forwarded answers carry the leader's CORS headers already (applying the same
            // policy again changes nothing); the standby's own answers get them here.
            let finish = forwarder
                .cors
                .as_ref()
                .and_then(|c| c.finish(request.headers()));
            // The same for the label of the standby's own answers (`negotiate::label_answer`).
            let accept = netapi_chat_runtime::negotiate::accept_naming_text(request.headers());
            let bodied = !hyper::body::Body::is_end_stream(request.body());
            let version = request.version();
            // The request's id, as the leader takes it (the client's when sane), else one
            // made here and sent on: the leader's answer and the standby's own say the same.
            let mut request = request;
            let id = dropshot::incoming_request_id(request.headers()).unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().to_string();
                if let Ok(v) = HeaderValue::from_str(&id) {
                    request.headers_mut().insert(dropshot::HEADER_REQUEST_ID, v);
                }
                id
            });
            let mut answer = forward(&forwarder, peer, request).await;
            if !answer.headers().contains_key(dropshot::HEADER_REQUEST_ID)
                && let Ok(v) = HeaderValue::from_str(&id)
            {
                answer.headers_mut().insert(dropshot::HEADER_REQUEST_ID, v);
            }
            // The leader's answers say it already (the documents their own caching); the
            // standby's own are errors and its `/healthz`.
            crate::server::no_store(answer.headers_mut());
            // A `503` made here to a request with a body may leave the body unread, and hyper
            // then closes the connection: the answer says so (RFC 9112 9.6), so that the
            // client does not write its next request into a closed connection (the takeover
            // review: a reset on the request after a refused `POST`).
            if bodied && answer.extensions().get::<Unavailable>().is_some() {
                answer
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(finish) = finish {
                finish(answer.headers_mut());
            }
            netapi_chat_runtime::negotiate::label_answer(accept.as_deref(), answer.headers_mut());
            // Once this instance leads, the proxy's connections go as each is answered (hyper
            // closes a connection after an answer saying so): their clients come back to the
            // server itself. An upgraded one is the socket's until it closes.
            if forwarder.leads() && answer.status() != StatusCode::SWITCHING_PROTOCOLS {
                answer
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // An HTTP/1.0 client told `close` gets nothing else (the takeover review's F6:
            // hyper added `keep-alive` beside it).
            dropshot::closing_for(&mut answer, version);
            // The leader's early refusal, relayed, leaves the client's body unread here too:
            // this socket then closes lingering (vendored dropshot, PATCHES.md 30).
            answered.answered(bodied, Some(answer.status()));
            drop(in_flight);
            Ok::<_, Infallible>(answer)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    if let Some(max) = read_buffer {
        builder.max_buf_size(max);
    }
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // Asked to go (the stop, shed, idle): the request under way (if any) is answered, then
    // the connection closes; an idle one closes now, and one on which nothing moves is dropped.
    dropshot::drive_connection(connection, |c| c.graceful_shutdown(), conn, stopping).await;
}

/// Returns once this instance takes the lead (never, should the [`Forwarder`] be gone).
async fn promoted(role: &mut tokio::sync::watch::Receiver<Role>) {
    if role
        .wait_for(|r| !matches!(r, Role::Standby))
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// Returns once a graceful stop is asked for (never, should the [`Drain`] be gone).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A standby's graceful stop (SIGTERM, SIGINT): made by `main` before [`start`], which hands
/// it to the standby's proxy. [`Drain::stop`] stops accepting connections, lets each open one
/// finish the request it is forwarding (a client whose request the leader carried out gets
/// its answer, not a reset connection it would have to retry), closes it, and waits for
/// that, at most `grace`.
#[derive(Clone, Debug)]
pub struct Drain {
    stop: tokio::sync::watch::Sender<bool>,
    done: Arc<tokio::sync::watch::Sender<bool>>,
    /// `true` while the standby holds a connection carrying the leader's callback attempts
    /// ([`carry_deliveries`]): a stop also waits until the attempts it holds are answered.
    carrying: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            stop: tokio::sync::watch::Sender::new(false),
            done: Arc::new(tokio::sync::watch::Sender::new(false)),
            carrying: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl Drain {
    /// Stops the standby's proxy gracefully (see [`Drain`]); `true` when every connection
    /// closed within `grace`. Returns at once when this instance never stood by.
    pub async fn stop(&self, grace: Duration) -> bool {
        let mut done = self.done.subscribe();
        let mut carrying = self.carrying.subscribe();
        self.stop.send_replace(true);
        if self.stop.receiver_count() == 0 {
            return true;
        }
        tokio::time::timeout(grace, async {
            let _ = done.wait_for(|d| *d).await;
            let _ = carrying.wait_for(|c| !*c).await;
        })
        .await
        .is_ok()
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), plus `Host`
/// (the leader's is set by the client).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// Removes the hop-by-hop headers, except `Connection: upgrade` + `Upgrade` for a protocol
/// switch (a WebSocket handshake), which must reach the other side: the fixed ones, and every
/// field a `Connection` header names as an option (RFC 9110 §7.6.1: `Connection: close,
/// x-trace` makes `x-trace` this hop's; before, the standby forwarded such fields).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
}

/// Whether the `Connection` headers of a message name `option` (`upgrade`, `close`; any case).
fn connection_says(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

/// Whether a request asks to switch protocols (a WebSocket handshake).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_says(headers, "upgrade")
}

/// The origin-form path and query a standby forwards for `target` (RFC 9112 §3.2): that of
/// an origin-form target (`/…`) or of an absolute-form one (`http://host/…`, whose host is
/// ignored, as the leader ignores it). `None` for a target that names no path on this service
/// (`*`, an authority such as `CONNECT`'s `host:port`): such a request is not forwarded at all
/// (the leader would answer it `404`, and no upstream URI can be built from it without
/// changing where it goes).
fn origin_form(target: &http::Uri) -> Option<http::uri::PathAndQuery> {
    if !target.path().starts_with('/') {
        return None;
    }
    Some(
        target
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    )
}

/// The URI a standby sends a request for `path` to: the scheme and authority of the leader's
/// URL as parsed (by the rule of [`ClusterUrl::parse`]), and `path`; never text glued
/// together, which a target like `*` could turn into another authority (`host:port*`, read as
/// port 80), so that the request and the cluster key never go anywhere but to the leader.
/// `None` when the leader's URL does not read.
fn upstream_uri(leader_url: &str, path: http::uri::PathAndQuery) -> Option<http::Uri> {
    let ClusterUrl::Given(url) = ClusterUrl::parse(leader_url)? else {
        return None;
    };
    let leader = http::Uri::from_str(&url).ok()?.into_parts();
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(leader.scheme?);
    parts.authority = Some(leader.authority?);
    parts.path_and_query = Some(path);
    http::Uri::from_parts(parts).ok()
}

/// `413 POL2004` (the leader's answer to an announced body over the limit, connection closed)
/// for a request that asks for `100 Continue` and announces a `Content-Length` over `cap`.
/// The standby's hyper sends `100` as soon as the body is polled, which forwarding does at
/// once, before the leader has authenticated or size-checked anything: the client then
/// uploaded into a connection the leader closed (a broken pipe, not the refusal). Answered
/// without polling the body, no `100` goes out and nothing of it is read. Only with `Expect`
/// and credentials: other requests get the leader's own answer (`401` before `413` for a
/// client without a token; one whose token the leader would refuse gets the `413` here, the
/// one difference left: the standby checks no credentials).
fn refused_before_continue(
    headers: &HeaderMap,
    cap: usize,
) -> Option<netapi_chat_runtime::ApiError> {
    let continues = headers.contains_key(header::AUTHORIZATION)
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let length = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (continues && length > u64::try_from(cap).unwrap_or(u64::MAX))
        .then(|| netapi_chat_runtime::ApiError::payload_too_large(cap).closing())
}

/// The client's request body on its way to the leader, remembering the first error its stream
/// gave (a malformed chunk, a body cut short of its `Content-Length`): a forward that fails
/// because of it is the client's mistake, answered `400` as the leader answers it, not the
/// leader's outage (no `503`, no count, no warning). The stream itself sits in a [`Slot`]
/// the forward keeps a handle of, so that a request the leader refused at connect goes again
/// with it.
struct ClientBody {
    slot: Slot,
    failed: Arc<std::sync::OnceLock<String>>,
}

/// A client's body stream shared by the request hyper holds and the forward that gave it:
/// whether hyper has begun reading it, and the stream while nobody took it back.
#[derive(Clone)]
struct Slot(Arc<std::sync::Mutex<Unsent>>);

/// What a [`Slot`] holds.
struct Unsent {
    /// `None`: no body, or taken back to go again ([`Slot::take_unread`]).
    body: Option<Incoming>,
    /// Whether hyper has asked for a frame: from then on the stream is partly the leader's.
    polled: bool,
}

impl Slot {
    fn new(body: Option<Incoming>) -> Slot {
        Slot(Arc::new(std::sync::Mutex::new(Unsent {
            body,
            polled: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unsent> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The body, taken back for another send, when hyper never read from it (a connection
    /// refused: nothing of the request left this instance); `None` once any of it was read.
    /// What hyper still holds then reads as an empty, ended body.
    fn take_unread(&self) -> Option<Option<Incoming>> {
        let mut unsent = self.lock();
        (!unsent.polled).then(|| unsent.body.take())
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let mut unsent = self.slot.lock();
        unsent.polled = true;
        let Some(inner) = unsent.body.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.failed.set(e.to_string());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.slot
            .lock()
            .body
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.slot.lock().body.as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            hyper::body::Body::size_hint,
        )
    }
}

/// One request at a standby: `/healthz` answered here (this process is alive); a target that
/// names no path `404` as the leader answers it; anything else forwarded to the leader, or
/// `503` with `Retry-After` when there is none to reach.
async fn forward(
    forwarder: &Forwarder,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    // The client's own `Host` fields, which the forward replaces: refused here as the leader
    // refuses them (`gate::host_refused`), before anything, as there.
    if let Some(error) = crate::gate::host_error(request.version(), request.headers()) {
        return answer(crate::gate::answer_format(request.headers()), &error);
    }
    // A transfer coding besides `chunked`, refused as the leader's gate refuses it: the hop's
    // `Transfer-Encoding` stays behind, so the leader would read the body still coded.
    if let Some(codings) = crate::gate::unknown_transfer_coding(request.headers()) {
        let error = netapi_chat_runtime::ApiError::unsupported_transfer_coding(&codings);
        return answer(crate::gate::answer_format(request.headers()), &error);
    }
    // Once this instance leads, its server answers these too (forwarded below).
    let standing_by = !forwarder.leads();
    let own = |path: &str| {
        let asked = request.uri().path();
        asked == path || asked.strip_suffix('/') == Some(path)
    };
    // Its own `/healthz` and `/metrics` (when metrics are on) are the `GET`s and `HEAD`s of
    // them; any other method is forwarded, so that the leader's gate answers it as it answers
    // it at the leader (`405` with `Allow`, a CORS preflight, `404` of a `/metrics` with
    // metrics off): answered here, a preflight was `405` and a `POST /metrics` with metrics
    // off `405` where the leader said `404` (the HTTP review of 2026-12-07).
    let method = request.method();
    let reads = method == http::Method::GET || method == http::Method::HEAD;
    let here = standing_by && reads;
    if here && own("/healthz") {
        // Not to be stored, as every answer of the standby's (`serve_one`).
        return plain(StatusCode::OK, "ok (standby)\n");
    }
    if here
        && let Some(token) = forwarder.metrics_token.as_deref()
        && own(crate::metrics::PATH)
    {
        let client =
            crate::proxies::client_address(peer, request.headers(), &forwarder.trusted_proxies);
        return standby_metrics(forwarder, token, client.ip(), request.headers());
    }
    let format = crate::gate::answer_format(request.headers());
    // Answered here before any body is read, as the leader's gate answers it.
    let unrouted =
        |path: &str| crate::gate::before_the_body(request.headers(), crate::gate::unrouted(path));
    let Some(path) = origin_form(request.uri()) else {
        // What the leader answers it: its router knows no such path.
        return answer(format, &unrouted(request.uri().path()));
    };
    if path.path() == relay::PATH {
        // Between instances only: never forwarded with the key on a client's behalf (the
        // leader refuses a forwarded one too). What the leader answers a client: `404`.
        return answer(format, &unrouted(path.path()));
    }
    if let Some(refused) = refused_before_continue(request.headers(), forwarder.max_body_bytes) {
        return answer(format, &refused);
    }
    FORWARDING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut seen = *forwarder.changes.borrow();
    // A request waits for the next leader this long at most in all (a leader that goes on
    // refusing, misconfigured: its `503` comes after the hold, not after two).
    let hold_until = tokio::time::Instant::now() + HOLD_FOR_THE_NEXT_LEADER;
    if forwarder.holds(seen) {
        forwarder.changed_since(seen, hold_until).await;
        seen = *forwarder.changes.borrow();
    }
    let Some(leader) = forwarder.leader_now().await else {
        return unavailable(format, "no instance leads the database at the moment");
    };
    // The right key comes from another standby that took this one for the leader: not
    // forwarded again (no loops while the leader table is stale). Any other value is a
    // client's, dropped below as the leader drops it.
    let keys: Vec<HeaderValue> = request
        .headers()
        .get_all(&CLUSTER_KEY)
        .iter()
        .cloned()
        .collect();
    let from_a_standby = |leader: &Leader| {
        keys.iter()
            .any(|given| same_secret(given.as_bytes(), leader.key.as_bytes()))
    };
    // Once this instance leads, what another standby relayed here (with this instance's key,
    // the table naming it) goes to its own server, for the client that standby names.
    let relayed = match forwarder.leads() {
        true => forwarded_client(&mut request, &leader.key),
        false if from_a_standby(&leader) => {
            return unavailable(format, "no instance leads the database at the moment");
        }
        false => None,
    };
    let upgrade = wants_upgrade(request.headers());
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    // The hop to the leader is this standby's own kept-alive HTTP/1.1 connection, whatever
    // the client speaks (an HTTP/1.0 request forwarded as such was answered in HTTP/1.0,
    // and that answer closed the client's kept-alive connection); hyper answers an HTTP/1.0
    // client in its version.
    parts.version = http::Version::HTTP_11;
    // The request's id is this standby's to send (the client's, or one it made: the caller
    // set it), also when the client's `Connection` names the field: stripped with the other
    // fields it names, the leader answered with an id of its own, and the standby's own
    // answers with another.
    let id = parts.headers.get(dropshot::HEADER_REQUEST_ID).cloned();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if let Some(id) = id {
        parts.headers.insert(dropshot::HEADER_REQUEST_ID, id);
    }
    // Whatever a client put there is replaced: only this standby says where a request came
    // from (through a proxy it trusts, the client that proxy names).
    parts.headers.remove(&FORWARDED_FOR);
    parts.headers.remove(&CLUSTER_KEY);
    let client = relayed.unwrap_or_else(|| {
        crate::proxies::client_address(peer, &parts.headers, &forwarder.trusted_proxies)
    });
    // A request the leader refused at connect (nothing of it sent, its body unread) can go
    // again, with its body, to the next leader; a `GET` or `HEAD` without a body the leader
    // cut before answering (a kept-alive connection it closed as the request went out, at
    // its stop), again at once (RFC 9110 9.2.2: it is safe). Three times at most (cut, cut
    // again on another pooled connection, then refused).
    let again = parts.clone();
    let bodiless = hyper::body::Body::is_end_stream(&body);
    let safe = bodiless && matches!(parts.method, http::Method::GET | http::Method::HEAD);
    let mut retries = 3;
    let failed = Arc::new(std::sync::OnceLock::new());
    let mut slot = Slot::new(Some(body));
    let mut sending = (
        parts,
        ClientBody {
            slot: slot.clone(),
            failed: Arc::clone(&failed),
        },
    );
    let mut leader = leader;
    let mut answer = loop {
        let (parts, body) = sending;
        // The leader said it stops since this request read it: nothing of the request has
        // gone yet, so it waits for the next leader too ([`Forwarder::leaving`]).
        if forwarder.is_leaving(seen) {
            forwarder.changed_since(seen, hold_until).await;
            let now = *forwarder.changes.borrow();
            if now != seen {
                seen = now;
                match forwarder.leader_now().await {
                    Some(next) if !from_a_standby(&next) => leader = next,
                    _ => {
                        return unavailable(format, "no instance leads the database at the moment");
                    }
                }
            }
        }
        let Some(parts) = addressed(parts, &leader, &path, client) else {
            return unavailable(format, "the leader's address does not read");
        };
        let request = Request::from_parts(parts, body);
        let within = answer_within(&request, forwarder.poll_wait);
        let sent = forwarder.client_for(seen).request(request);
        let e = match tokio::time::timeout(within, sent).await {
            Ok(Ok(a)) => {
                forwarder.recovered();
                break a;
            }
            Ok(Err(e)) => e,
            Err(_) => {
                forwarder.report(&leader, &LeaderSilent(within));
                return unavailable(format, LEADER_SILENT);
            }
        };
        if let Some(why) = failed.get() {
            // The client's body failed, not the leader: what the leader answers it.
            return self::answer(format, &client_body_error(why));
        }
        forwarder.report(&leader, &e);
        let stopped = crate::tls::stopped_by(&e);
        let refused = matches!(stopped, Some(crate::tls::Stopped::Refused));
        // Closed or reset before the answer began: a stopping leader closing a kept-alive
        // connection as the request went out, or a killed one.
        let cut = matches!(stopped, Some(crate::tls::Stopped::Cut));
        if refused {
            // Nothing was sent: the leader is likely stopping (its listener closed).
            forwarder.was_refused(seen);
        }
        // A body goes again only when the leader read none of it; hyper's copy of the
        // request then holds an ended, empty one.
        let unread = match (refused || (safe && cut), bodiless) {
            (false, _) => None,
            (true, true) => Some(None),
            (true, false) => slot.take_unread(),
        };
        if let Some(body) = unread.filter(|_| retries > 0) {
            retries -= 1;
            let next = match refused {
                true => {
                    forwarder.changed_since(seen, hold_until).await;
                    seen = *forwarder.changes.borrow();
                    forwarder
                        .leader_now()
                        .await
                        .filter(|next| *next != leader && !from_a_standby(next))
                }
                false => Some(leader.clone()),
            };
            if let Some(next) = next {
                leader = next;
                slot = Slot::new(body);
                let body = ClientBody {
                    slot: slot.clone(),
                    failed: Arc::clone(&failed),
                };
                sending = (again.clone(), body);
                continue;
            }
        }
        return unavailable(format, unreachable_because(&e));
    };
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = client_side
    {
        let leader_side = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            if let (Ok(c), Ok(l)) = (client_side.await, leader_side.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(l)).await;
            }
        });
    }
    let switching = answer.status() == StatusCode::SWITCHING_PROTOCOLS;
    // The leader closes its connection after an answer whose request's framing it no longer
    // trusts (`431`, an early `4xx` on an unread body): the client's connection closes too
    // (hyper does, seeing the header), rather than going on with what the leader refused to.
    let closing = !switching && connection_says(answer.headers(), "close");
    strip_hop_by_hop(answer.headers_mut(), switching);
    if closing {
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer.map(http_body_util::BodyExt::boxed)
}

/// `parts` addressed to `leader`: its URI for `path`, and the client address `client` with
/// the key the leader trusts it on; `None` when the leader's URL does not read.
fn addressed(
    mut parts: http::request::Parts,
    leader: &Leader,
    path: &http::uri::PathAndQuery,
    client: SocketAddr,
) -> Option<http::request::Parts> {
    parts.uri = upstream_uri(&leader.url, path.clone())?;
    if let (Ok(from), Ok(key)) = (
        HeaderValue::from_str(&client.to_string()),
        HeaderValue::from_str(&leader.key),
    ) {
        parts.headers.insert(FORWARDED_FOR, from);
        parts.headers.insert(CLUSTER_KEY, key);
    }
    Some(parts)
}

/// `400 SVC0002` for a request body whose stream failed (`why`), with `Connection: close`:
/// the leader's answer to it (`negotiate::collect`), the connection's framing being lost.
fn client_body_error(why: &str) -> netapi_chat_runtime::ApiError {
    netapi_chat_runtime::ApiError::invalid_input(format!("error reading the request body: {why}"))
        .closing()
}

/// What a client is told (the `%1` of `SVC2001`) when a forward to the leader failed with
/// `error`: a short class of reason an app developer or operator can act on, read from the
/// error's chain (a certificate the TLS client refused, a refused connection, a timeout),
/// never the error's own text (which names addresses). The full error goes to the standby's
/// log ([`Forwarder::report`]). A certificate problem is not passing (it lasts until the
/// certificates or `NETAPI_CHAT_CLUSTER_CA_FILE` change), so only the other classes promise a
/// takeover.
fn unreachable_because(error: &(dyn std::error::Error + 'static)) -> &'static str {
    use crate::tls::Stopped;
    use rustls::CertificateError as C;
    match crate::tls::stopped_by(error) {
        Some(Stopped::Tls(rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ))) => {
            "the leading instance's TLS certificate does not name the host this instance \
             reaches it at"
        }
        Some(Stopped::Tls(rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ))) => "the leading instance's TLS certificate has expired or is not valid yet",
        Some(Stopped::Tls(rustls::Error::InvalidCertificate(_))) => {
            "the leading instance's TLS certificate is not trusted by this instance"
        }
        Some(Stopped::Tls(_)) => "the TLS handshake with the leading instance failed",
        Some(Stopped::Refused) => {
            "the leading instance refused the connection; if it stopped, another takes over within seconds"
        }
        Some(Stopped::TimedOut) => {
            "the leading instance did not answer in time; if it stopped, another takes over \
             within seconds"
        }
        // The leader closed the connection with the request under way: stopping, killed, or
        // a refusal whose body it stopped reading (past its lingering close's bound).
        Some(Stopped::Cut) => {
            "the leading instance closed the connection before it answered; if it stopped, \
             another takes over within seconds"
        }
        None => {
            "the instance that leads cannot be reached; if it stopped, another takes over \
             within seconds"
        }
    }
}

/// A short text answer of the standby itself.
fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(text.into()).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `503 SVC2001` with `Retry-After`, in `format` (negotiated; JSON when none fits), counted
/// as a request no leader could serve.
fn unavailable(format: media::Format, why: &str) -> Response<ProxyBody> {
    REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = answer(format, &crate::chat::no_resources(why, RETRY_AFTER_SECS));
    r.extensions_mut().insert(Unavailable);
    r
}

/// Marks a `503` this standby made itself ([`unavailable`]): the request's body, if it had
/// one, may be unread ([`serve_one`] then says the connection closes).
#[derive(Clone, Copy, Debug)]
struct Unavailable;

/// An error the standby answers itself, in `format`, as the leader renders one.
fn answer(format: media::Format, error: &netapi_chat_runtime::ApiError) -> Response<ProxyBody> {
    let body = netapi_chat_runtime::wire::encode(
        format,
        &<RequestError as netapi_chat_runtime::wire::ErrorDocument>::from_error(error),
    );
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = error.status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    for (name, value) in &error.headers {
        h.insert(name.clone(), value.clone());
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// Requests a standby took to forward (its `/healthz` and `/metrics` aside), since the process
/// started.
static FORWARDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Requests a standby answered `503` itself (no leader to reach, or none answered in time).
static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A standby's own `/metrics` (metrics on, their token `token`), to the metrics token (`401`
/// without it; with metrics off the request is forwarded, and the leader's gate answers
/// `404`): whether it leads (`0`), what it took to forward, and what it answered `503` itself.
/// Its own, not the leader's: a Prometheus job that scrapes every instance then sums each
/// series once (a forwarded `/metrics` gave every instance the
/// leader's series, counted once per instance), and sees which instance leads.
fn standby_metrics(
    forwarder: &Forwarder,
    token: &str,
    client: std::net::IpAddr,
    headers: &HeaderMap,
) -> Response<ProxyBody> {
    let admitted = forwarder
        .auth_failures
        .operator_token(client, headers, token);
    let admitted = match admitted {
        Ok(ok) => ok,
        Err(too_many) => {
            let mut r = plain(too_many.status, format!("{}\n", too_many.rendered()));
            for (name, value) in &too_many.headers {
                r.headers_mut().insert(name.clone(), value.clone());
            }
            return r;
        }
    };
    if !admitted {
        let mut r = plain(StatusCode::UNAUTHORIZED, crate::metrics::TOKEN_REQUIRED);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(crate::metrics::CHALLENGE),
        );
        return r;
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let text = crate::metrics::standby_text(load(&FORWARDING), load(&REFUSED), relay::made_count());
    let mut r = Response::new(Full::new(Bytes::from(text)).map_err(|n| match n {}).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::TEXT_FORMAT),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The address this instance listens on (set once, when a cluster's instance starts), so that
/// starting over ([`start_over`]) listens there again even when port 0 was configured.
static BOUND: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// Starts the process over in place (same pid, arguments and environment), for a leader that
/// found another instance leading the database after it was cut off (`why` says so in the
/// log): the new image finds the lock held and stands by; or for an instance whose database
/// went away as it took the lead: the new image stands by, answering `503` until it can
/// reach the database, and leads then if nobody else does. Returns only if that cannot be
/// done (the caller then exits).
pub fn start_over(why: &str) {
    use std::os::unix::process::CommandExt as _;
    // The binary at the path this process was started from, when there is one there (after
    // an upgrade in place, the new version: an old one could not lead a database the new
    // leader migrated); else the file this process runs, removed since it started
    // (`/proc/self/exe` still opens it), so that the instance stands by instead of exiting.
    let exe = match std::env::current_exe() {
        Ok(path) => {
            let text = path.to_string_lossy();
            // Linux names an unlinked file `… (deleted)`, a path that does not exist.
            let named = std::path::PathBuf::from(text.trim_end_matches(" (deleted)"));
            match named.exists() {
                true => named,
                false => std::path::PathBuf::from("/proc/self/exe"),
            }
        }
        Err(_) => std::path::PathBuf::from("/proc/self/exe"),
    };
    tracing::warn!("{why}; starting over as a standby");
    let mut again = std::process::Command::new(exe);
    // Its own name, as it was started (what `ps` and the logs show).
    if let Some(name) = std::env::args_os().next() {
        again.arg0(name);
    }
    again.args(std::env::args_os().skip(1));
    if let Some(bound) = BOUND.get() {
        again.env("NETAPI_CHAT_BIND", bound.to_string());
    }
    let e = again.exec();
    eprintln!("netapi-chat: could not start over as a standby ({e}); exiting");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock found free after the standby's own connection came back from an outage during
    /// which a leader held it waits [`HEAD_START`] for that leader to take it again; a lock
    /// found free otherwise (a leader killed, the standby's session up all along) is taken at
    /// once, and one taken again by the leader in the head start resets the rule.
    #[test]
    fn the_last_leader_gets_a_head_start_after_a_database_outage() {
        let t0 = std::time::Instant::now();
        let mut o = Outage::default();
        assert!(!head_start_over(&mut o, false, t0), "held");
        assert!(
            head_start_over(&mut o, true, t0),
            "the leader died: at once"
        );

        let mut o = Outage::default();
        assert!(!head_start_over(&mut o, false, t0));
        o.lost();
        o.lost();
        let back = t0 + Duration::from_secs(5);
        assert!(
            !head_start_over(&mut o, true, back),
            "free after the outage"
        );
        assert!(!head_start_over(&mut o, true, back + HEAD_START / 2));
        assert!(
            head_start_over(&mut o, true, back + HEAD_START),
            "its head start is over"
        );
        assert!(
            head_start_over(&mut o, true, back + HEAD_START * 2),
            "and stays so"
        );

        // The leader took its lock again within its head start: nothing carried over.
        let mut o = Outage::default();
        assert!(!head_start_over(&mut o, false, t0));
        o.lost();
        assert!(!head_start_over(&mut o, true, back));
        assert!(!head_start_over(&mut o, false, back + HEAD_START / 2));
        assert!(
            head_start_over(&mut o, true, back + HEAD_START),
            "then killed: at once"
        );

        // Lost again during the head start: it starts over from the next free sighting.
        let mut o = Outage::default();
        assert!(!head_start_over(&mut o, false, t0));
        o.lost();
        assert!(!head_start_over(&mut o, true, back));
        o.lost();
        let again = back + HEAD_START * 3;
        assert!(!head_start_over(&mut o, true, again));
        assert!(head_start_over(&mut o, true, again + HEAD_START));

        // Never connected, never saw a leader: a new cluster's first instance leads at once.
        let mut o = Outage::default();
        o.lost();
        assert!(head_start_over(&mut o, true, t0));
    }

    /// A stop serves the clients in the listen backlog whether or not the reactor has reported
    /// them (vendored dropshot's `take_backlog`, PATCHES.md 23; the leader's close and this
    /// standby's): here the runtime has not turned since they connected, so `accept()` polled
    /// once finds none of them, and `take_backlog` takes each, as many as there is room for.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stop_takes_the_backlog_the_reactor_has_not_reported_yet() {
        use futures_util::FutureExt as _;
        /// A listener and three clients connected to it, which the reactor has not seen.
        async fn waiting() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let clients = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect();
            (listener, clients)
        }
        let (listener, clients) = waiting().await;
        assert!(
            listener.accept().now_or_never().is_none(),
            "not reported yet"
        );
        let mut taken = Vec::new();
        dropshot::take_backlog(listener, || true, |s, peer| taken.push((s, peer)));
        let mut peers: Vec<_> = taken.iter().map(|(_, p)| *p).collect();
        let mut sent: Vec<_> = clients.iter().filter_map(|c| c.local_addr().ok()).collect();
        peers.sort();
        sent.sort();
        assert_eq!(peers, sent);

        let (listener, _clients) = waiting().await;
        let (mut room, mut taken) = (2, 0);
        let has_room = || {
            room -= 1;
            room >= 0
        };
        dropshot::take_backlog(listener, has_room, |_, _| taken += 1);
        assert_eq!(taken, 2, "no more than there is room for");
    }

    /// Only a request asking for `100 Continue` with a `Content-Length` over the limit is
    /// refused at the standby (`413 POL2004`, connection closed); anything else goes on to the
    /// leader.
    #[test]
    fn an_announced_body_over_the_limit_is_refused_before_100_continue() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h
        };
        let e = refused_before_continue(
            &headers(&[
                ("expect", "100-Continue"),
                ("content-length", "65537"),
                ("authorization", "Bearer t"),
            ]),
            65536,
        )
        .expect("refused");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let a = answer(media::Format::Json, &e);
        assert_eq!(a.headers()[header::CONNECTION], "close");
        for h in [
            headers(&[("expect", "100-continue"), ("content-length", "65536")]),
            headers(&[("content-length", "99999999")]),
            headers(&[("expect", "100-continue"), ("transfer-encoding", "chunked")]),
            // No credentials: the leader's `401` comes first.
            headers(&[("expect", "100-continue"), ("content-length", "65537")]),
        ] {
            assert!(refused_before_continue(&h, 65536).is_none(), "{h:?}");
        }
    }

    /// The standby lets go of an idle connection to the leader well before the leader closes
    /// it (half its idle timeout), and never keeps one longer than 30 s.
    #[test]
    fn pooled_connections_to_the_leader_expire_before_the_leader_closes_them() {
        let s = Duration::from_secs_f64;
        assert_eq!(pool_idle_timeout(s(1.0)), s(0.5));
        assert_eq!(pool_idle_timeout(s(0.2)), s(0.1));
        assert_eq!(pool_idle_timeout(s(60.0)), s(30.0));
        assert_eq!(pool_idle_timeout(s(3600.0)), s(30.0));
    }

    /// A long poll (POST of a channel's `notifications`) may wait its poll wait before the
    /// leader starts its answer; everything else gets the leader's own bound and a margin.
    #[test]
    fn a_long_poll_may_wait_its_poll_wait_the_rest_twenty_seconds() {
        let req = |method: &str, path: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap()
        };
        let wait = Duration::from_secs(25);
        let poll = req(
            "POST",
            "/notificationchannel/v1/tel%3A%2B1/channels/ch-1/notifications",
        );
        assert_eq!(answer_within(&poll, wait), Duration::from_secs(45));
        for (m, path) in [
            (
                "GET",
                "/notificationchannel/v1/tel%3A%2B1/channels/ch-1/notifications",
            ),
            ("POST", "/notificationchannel/v1/tel%3A%2B1/channels"),
            ("POST", "/v1/chat/tel%3A%2B1/chatSessions/s/messages"),
            ("GET", "/v1/chat/tel%3A%2B1/subscriptions"),
        ] {
            assert_eq!(
                answer_within(&req(m, path), wait),
                ANSWER_WITHIN,
                "{m} {path}"
            );
        }
    }

    /// The leader's cluster URL reaches it only when its own id comes back; a standby's
    /// `/healthz` (no id), another instance's or another service's do not.
    #[test]
    fn a_cluster_url_reaches_the_leader_when_its_own_id_comes_back() {
        assert_eq!(own_url_reaches(Some("ab12"), "ab12"), OwnUrl::ReachesThis);
        assert_eq!(
            own_url_reaches(Some("cd34"), "ab12"),
            OwnUrl::ReachesAnother
        );
        assert_eq!(own_url_reaches(None, "ab12"), OwnUrl::ReachesAnother);
        assert_eq!(instance_id(), instance_id());
        assert_eq!(instance_id().len(), 16);
    }

    #[test]
    fn cluster_urls_are_auto_or_http_or_https_with_a_port() {
        assert_eq!(ClusterUrl::parse("auto"), Some(ClusterUrl::Auto));
        assert_eq!(
            ClusterUrl::parse("http://10.0.0.2:8080/"),
            Some(ClusterUrl::Given("http://10.0.0.2:8080".into()))
        );
        assert_eq!(
            ClusterUrl::parse("https://chat-1.internal:8443/"),
            Some(ClusterUrl::Given("https://chat-1.internal:8443".into()))
        );
        assert_eq!(
            ClusterUrl::parse("https://[fd00::2]:8443"),
            Some(ClusterUrl::Given("https://[fd00::2]:8443".into()))
        );
        for bad in [
            "ftp://10.0.0.2:8080",
            "ws://10.0.0.2:8080",
            "https://10.0.0.2",
            "https://10.0.0.2:8443/v1",
            "https://u@10.0.0.2:8443",
            "http://10.0.0.2",
            "http://10.0.0.2:0",
            "http://10.0.0.2:8080/v1",
            "http://a:b@10.0.0.2:8080",
            "http://10.0.0.2:8080?x=1",
            "10.0.0.2:8080",
            "",
        ] {
            assert_eq!(ClusterUrl::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn auto_needs_a_specific_bound_address() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let one: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        assert!(ClusterUrl::Auto.resolve(any, false).is_err());
        assert!(ClusterUrl::Auto.resolve(any, true).is_err());
        assert_eq!(
            ClusterUrl::Auto.resolve(one, false).unwrap(),
            "http://10.0.0.2:8080"
        );
    }

    #[test]
    fn auto_is_https_when_the_instance_serves_tls() {
        let one: SocketAddr = "10.0.0.2:8443".parse().unwrap();
        assert_eq!(
            ClusterUrl::Auto.resolve(one, true).unwrap(),
            "https://10.0.0.2:8443"
        );
        assert!(ClusterUrl::Auto.is_https(true) && !ClusterUrl::Auto.is_https(false));
        // A given URL is what it says, whatever the instance serves.
        let given = ClusterUrl::Given("http://10.0.0.2:8080".into());
        assert_eq!(given.resolve(one, true).unwrap(), "http://10.0.0.2:8080");
        assert!(!given.is_https(true));
    }

    /// The configuration rules: TLS on the instance with `auto` or `https://` is a cluster
    /// (it was refused before TLS between instances existed); with `http://` it is refused,
    /// naming the setting, since its port speaks TLS only; `https://` without TLS is
    /// accepted (a TLS proxy of the operator's in front of the instance).
    #[test]
    fn tls_on_the_instance_needs_an_https_or_auto_cluster_url() {
        let tls = crate::tls::TlsFiles {
            cert: "/etc/netapi-chat/cert.pem".into(),
            key: "/etc/netapi-chat/key.pem".into(),
        };
        let config = |url: &str, tls: Option<crate::tls::TlsFiles>| Config {
            database_url: Some("postgres://db/chat".into()),
            cluster_url: ClusterUrl::parse(url),
            tls,
            ..Config::default()
        };
        assert_eq!(validate(&config("auto", Some(tls.clone()))), Ok(()));
        assert_eq!(
            validate(&config("https://10.0.0.2:8443", Some(tls.clone()))),
            Ok(())
        );
        assert_eq!(validate(&config("https://10.0.0.2:8443", None)), Ok(()));
        assert_eq!(validate(&config("http://10.0.0.2:8080", None)), Ok(()));
        let refused = validate(&config("http://10.0.0.2:8080", Some(tls))).unwrap_err();
        assert!(
            refused.contains("NETAPI_CHAT_CLUSTER_URL") && refused.contains("https://"),
            "{refused}"
        );
        let alone = Config {
            database_url: None,
            ..config("auto", None)
        };
        assert!(
            validate(&alone)
                .unwrap_err()
                .contains("NETAPI_CHAT_DATABASE_URL")
        );
    }

    /// The name a leader's certificate is verified for: its URL's host, an IP address (IPv6
    /// without brackets) as an IP name, anything else as a DNS name.
    #[test]
    fn the_leaders_certificate_is_verified_for_its_urls_host() {
        use rustls::pki_types::ServerName;
        let name = |u: &str| tls_name(&http::Uri::from_str(u).unwrap()).unwrap();
        assert_eq!(
            name("https://10.0.0.2:8443/v1"),
            ServerName::IpAddress("10.0.0.2".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert_eq!(
            name("https://[fd00::2]:8443/"),
            ServerName::IpAddress("fd00::2".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert_eq!(
            name("https://chat-1.internal:8443/"),
            ServerName::try_from("chat-1.internal").unwrap()
        );
    }

    /// The host an instance's own certificate must name: its cluster URL's (`auto`: the
    /// bound address, said to be `auto`'s), only with TLS on the instance and an `https://`
    /// URL; `auto` on a wildcard address has no host to check and is refused, the message
    /// asking for an explicit `https://` URL with a host the certificate carries.
    #[test]
    fn the_own_certificate_must_name_the_own_cluster_urls_host() {
        use rustls::pki_types::ServerName;
        let tls = crate::tls::TlsFiles {
            cert: "/etc/netapi-chat/cert.pem".into(),
            key: "/etc/netapi-chat/key.pem".into(),
        };
        let config = |url: Option<&str>, tls: Option<crate::tls::TlsFiles>| Config {
            database_url: Some("postgres://db/chat".into()),
            cluster_url: url.and_then(ClusterUrl::parse),
            tls,
            ..Config::default()
        };
        let one: SocketAddr = "10.0.0.2:8443".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let must = own_certificate_name(&config(Some("auto"), Some(tls.clone())), one)
            .unwrap()
            .unwrap();
        assert_eq!(
            must.name,
            ServerName::IpAddress("10.0.0.2".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert!(
            must.url.starts_with("https://10.0.0.2:8443 ") && must.url.contains("auto"),
            "{}",
            must.url
        );
        let given = config(Some("https://chat-1.internal:8443"), Some(tls.clone()));
        let must = own_certificate_name(&given, any).unwrap().unwrap();
        assert_eq!(must.name, ServerName::try_from("chat-1.internal").unwrap());
        assert_eq!(must.url, "https://chat-1.internal:8443");
        // No certificate of this instance's in play: nothing to check.
        for nothing in [
            config(Some("https://chat-1.internal:8443"), None),
            config(Some("http://chat-1.internal:8080"), None),
            config(Some("auto"), None),
            config(None, Some(tls.clone())),
        ] {
            assert_eq!(own_certificate_name(&nothing, one), Ok(None));
        }
        let refused = own_certificate_name(&config(Some("auto"), Some(tls)), any).unwrap_err();
        assert!(
            refused.contains("NETAPI_CHAT_BIND")
                && refused.contains("set NETAPI_CHAT_CLUSTER_URL")
                && refused.contains("https://host:port")
                && refused.contains("certificate"),
            "{refused}"
        );
    }

    /// An error with a source, as hyper's client and connector wrap what failed.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    /// A forward's failure as the client gets it from hyper's pool: the connector's error
    /// (`cause`) inside a client error.
    fn failed(cause: impl std::error::Error + Send + Sync + 'static) -> Wrapped {
        Wrapped("client error (Connect)", Box::new(cause))
    }

    /// The TLS handshake's error as tokio-rustls returns it: rustls' inside an I/O error.
    fn handshake(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    /// What a client is told for each class of failure, from the error chains hyper and
    /// tokio-rustls make; nothing of the error's own text (addresses) gets through.
    #[test]
    fn a_failed_forward_tells_the_client_a_class_of_reason() {
        use rustls::CertificateError as C;
        let untrusted = handshake(rustls::Error::InvalidCertificate(C::UnknownIssuer));
        assert_eq!(
            unreachable_because(&failed(untrusted)),
            "the leading instance's TLS certificate is not trusted by this instance"
        );
        let wrong_name = handshake(rustls::Error::InvalidCertificate(
            C::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("chat-1.internal").unwrap(),
                presented: vec!["DnsName(\"chat-2.internal\")".into()],
            },
        ));
        let told = unreachable_because(&failed(wrong_name));
        assert_eq!(
            told,
            "the leading instance's TLS certificate does not name the host this instance reaches it at"
        );
        assert!(!told.contains("chat-"), "no names from the error: {told}");
        let expired = handshake(rustls::Error::InvalidCertificate(C::Expired));
        assert!(unreachable_because(&failed(expired)).contains("has expired"));
        let alert = handshake(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(
            unreachable_because(&failed(alert)),
            "the TLS handshake with the leading instance failed"
        );
        // hyper's connector puts the I/O error one level deeper.
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connect to 10.0.0.2:8443",
        );
        let refused = failed(Wrapped("tcp connect error", Box::new(refused)));
        assert_eq!(
            unreachable_because(&refused),
            "the leading instance refused the connection; if it stopped, another takes over within seconds"
        );
        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake within 2 s");
        assert!(unreachable_because(&failed(slow)).contains("did not answer in time"));
        let closed = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(unreachable_because(&failed(closed)).contains("closed the connection before"));
        let other = std::io::Error::other("no route to host");
        assert_eq!(
            unreachable_because(&failed(other)),
            "the instance that leads cannot be reached; if it stopped, another takes over \
             within seconds"
        );
    }

    /// The standby's own `503` carries the reason in the client's format, with `SVC2001`
    /// and `Retry-After`.
    #[tokio::test]
    async fn the_standbys_503_says_why_in_the_clients_format() {
        let why = "the leading instance's TLS certificate is not trusted by this instance";
        for format in [media::Format::Json, media::Format::Xml] {
            let answer = unavailable(format, why);
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
            assert_eq!(
                answer.headers()[header::CONTENT_TYPE],
                format.content_type()
            );
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert!(
                body.contains("SVC2001") && body.contains(why),
                "{format:?}: {body}"
            );
        }
    }

    #[test]
    fn the_leader_trusts_a_forwarded_address_only_with_the_key() {
        let request = |key: Option<&str>| {
            let mut b = Request::builder()
                .uri("/x")
                .header(&FORWARDED_FOR, "192.0.2.7:5000");
            if let Some(k) = key {
                b = b.header(&CLUSTER_KEY, k);
            }
            b.body(()).unwrap()
        };
        let from: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        for (key, expected) in [
            (Some("k3y"), Some(from)),
            (Some("k3x"), None),
            (Some("k3yy"), None),
            (None, None),
        ] {
            let mut r = request(key);
            assert_eq!(forwarded_client(&mut r, "k3y"), expected, "{key:?}");
            assert!(
                r.headers().is_empty(),
                "both headers removed: {:?}",
                r.headers()
            );
        }
    }

    /// Only a target that names a path is forwarded, and always to the leader's own scheme
    /// and authority: `*` (which glued to the URL read as port 80 of the leader's host, the
    /// cluster key with it), an authority-form target and a bare word are not; an
    /// absolute-form target keeps only its path and query, whatever host it names.
    #[test]
    fn only_a_path_is_forwarded_and_only_to_the_leaders_authority() {
        // As hyper's server reads request targets.
        let target = |t: &str| http::Uri::from_str(t).unwrap();
        for not_a_path in ["*", "evil.example:80", "healthz", "127.0.0.1:80"] {
            assert_eq!(origin_form(&target(not_a_path)), None, "{not_a_path}");
        }
        for leader in ["http://127.0.0.1:19150", "https://chat-1.internal:8443/"] {
            for (t, path) in [
                ("/v1/chat/x?a=b", "/v1/chat/x?a=b"),
                ("//evil.example:81/x", "//evil.example:81/x"),
                ("/@evil.example/x", "/@evil.example/x"),
                ("http://evil.example:81/readyz?x=1", "/readyz?x=1"),
                ("http://evil.example", "/"),
            ] {
                let path_and_query = origin_form(&target(t)).expect(t);
                let uri = upstream_uri(leader, path_and_query).expect(t);
                let base = http::Uri::from_str(leader).unwrap();
                assert_eq!(uri.scheme(), base.scheme(), "{t}");
                assert_eq!(uri.authority(), base.authority(), "{t} to {leader}: {uri}");
                assert_eq!(uri.path_and_query().unwrap().as_str(), path, "{t}");
            }
        }
        let root = || http::uri::PathAndQuery::from_static("/");
        for bad in [
            "",
            "127.0.0.1:19150",
            "ftp://h:1",
            "http://u@h:1",
            "http://h:1/p",
        ] {
            assert_eq!(upstream_uri(bad, root()), None, "{bad}");
        }
    }

    /// Through a standby, the address it proves with the key is final, even when the
    /// standby's own address is a trusted proxy and the client sent an `X-Forwarded-For`; a
    /// request without the key gets the trusted-proxy rule for its connection's peer.
    #[test]
    fn an_address_proven_by_the_key_is_not_overridden_by_x_forwarded_for() {
        let trusted = crate::proxies::parse_list("127.0.0.1, 10.0.0.0/8").unwrap();
        let request = |key: Option<&str>, peer: &str| {
            let mut b = Request::builder()
                .uri("/x")
                .header(&FORWARDED_FOR, "192.0.2.7:5000")
                .header("x-forwarded-for", "203.0.113.77");
            if let Some(k) = key {
                b = b.header(&CLUSTER_KEY, k);
            }
            let mut r = b.body(()).unwrap();
            r.extensions_mut()
                .insert(dropshot::PeerAddr(peer.parse().unwrap()));
            r
        };
        let standby = "127.0.0.1:40000";
        let proven: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let named: SocketAddr = "203.0.113.77:0".parse().unwrap();
        for (key, peer, expected) in [
            (Some("k3y"), standby, Some(proven)),
            (Some("k3y"), "198.51.100.9:1", Some(proven)),
            (Some("wrong"), standby, Some(named)),
            (None, standby, Some(named)),
            (None, "198.51.100.9:1", None),
        ] {
            let mut r = request(key, peer);
            assert_eq!(
                client_of(&mut r, "k3y", &trusted),
                expected,
                "{key:?} {peer}"
            );
            assert!(!r.headers().contains_key(&CLUSTER_KEY));
            assert!(!r.headers().contains_key(&FORWARDED_FOR));
        }
    }

    /// A request whose body failed at the client is answered what the leader answers it:
    /// `400 SVC0002`, the connection closed.
    #[tokio::test]
    async fn a_clients_broken_body_is_its_400_not_the_leaders_503() {
        let a = answer(
            media::Format::Json,
            &client_body_error("invalid chunk size line"),
        );
        assert_eq!(a.status(), StatusCode::BAD_REQUEST);
        assert_eq!(a.headers()[header::CONNECTION], "close");
        let body = a.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("SVC0002") && body.contains("error reading the request body"),
            "{body}"
        );
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_except_a_protocol_switch() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::HOST, HeaderValue::from_static("lb.example"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert!(wants_upgrade(&h));
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
        strip_hop_by_hop(&mut h, true);
        assert!(h.contains_key(header::UPGRADE) && h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::HOST));

        // The fields `Connection` names go too (any case, in any of its fields).
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Trace"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" authorization ,,"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/xml"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::ACCEPT], "{h:?}");
    }
}
