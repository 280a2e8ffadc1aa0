//! HTTPS in the server, as an option (issue 17 item 7): the certificate chain and key named by
//! `NETAPI_CHAT_TLS_CERT` / `NETAPI_CHAT_TLS_KEY` (PEM files) become the rustls configuration
//! dropshot terminates TLS with. Plain HTTP stays the default.
//!
//! The pair is loaded and checked here rather than by dropshot's `ConfigTls::AsFile`, which
//! accepts PKCS #8 keys only and panics on a key that does not match the certificate: here a
//! bad pair is a clear message naming the setting, for `check-config` and at start-up alike.
//! TLS 1.2 and 1.3 (rustls' safe defaults, the aws-lc-rs provider dropshot already uses); ALPN
//! offers `http/1.1` only, so that the connection limits and header-read timeout, which are
//! HTTP/1.1 settings, hold for every TLS client.
//!
//! Renewal without a restart (issue 17): a handshake looks at the two files at most every
//! [`RELOAD_CHECK`] (a `stat` each, like the token file) and, when either changed, loads the
//! pair again; new connections get the new certificate, open ones keep theirs. A pair that does
//! not load (half-written, mismatched) changes nothing: the certificate in force stays and a
//! warning names the problem, once per change of the files.
//!
//! An instance of a cluster with an `https://` cluster URL (issue 14, TLS between instances)
//! also needs its certificate to name that URL's host: every standby verifies it for that
//! host, so a certificate that does not name it would make every standby refuse to forward to
//! this instance once it leads (`503` to every client). [`server_config`] is given that host
//! ([`MustName`]) and refuses such a certificate at start, and a renewed one that no longer
//! names it is not taken: the one in force stays, with a warning naming the host and the
//! names the new certificate carries (the same rule as a pair that does not load).

use crate::auth::watched::{Stamp, look_due};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Longest time between a renewed certificate on disk and new connections getting it (at the
/// first handshake after it).
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The certificate chain and key files (`NETAPI_CHAT_TLS_CERT`, `NETAPI_CHAT_TLS_KEY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS #8, PKCS #1 or SEC1).
    pub key: PathBuf,
}

/// What a PEM read failure means for the operator.
fn pem_problem(e: &rustls::pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot be read: {io}"),
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("no {what} in the file (PEM expected)")
        }
        // Said in text (the library's own `Display` and `Debug` show the marker as bytes).
        rustls::pki_types::pem::Error::MissingSectionEnd { end_marker } => format!(
            "not a valid PEM file: a section does not end (no `{}` line; half written?)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        rustls::pki_types::pem::Error::IllegalSectionStart { line } => format!(
            "not a valid PEM file: a malformed section start `{}`",
            String::from_utf8_lossy(line).trim()
        ),
        other => format!("not a valid PEM file: {other}"),
    }
}

/// The PEM certificates of `file` (at least one), or what is wrong with it.
fn certificates(file: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_problem(&e, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_problem(&e, "certificate"))?;
    if certs.is_empty() {
        return Err("no certificate in the file (PEM `CERTIFICATE` blocks expected)".to_owned());
    }
    Ok(certs)
}

/// A host the server's certificate must name besides matching its key: the host of the
/// instance's own `https://` cluster URL, which every standby verifies the certificate for
/// (see the module documentation). Made by `cluster::own_certificate_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MustName {
    /// The host as a TLS client verifies it: a DNS name, or an IP address (IP SANs only).
    pub name: ServerName<'static>,
    /// Where the host comes from, for messages: the cluster URL (and `auto` when derived).
    pub url: String,
}

impl MustName {
    /// The host, as written in a certificate (an IPv6 address without brackets).
    fn host(&self) -> String {
        self.name.to_str().into_owned()
    }
}

/// Whether `cert` (an end-entity certificate) is valid for `name` by the rule a TLS client
/// applies (webpki, as the standbys' rustls does): a DNS name against the DNS
/// subjectAltNames, case-insensitively, a `*.` wildcard covering exactly one leftmost label;
/// an IP address against the IP subjectAltNames only; never the subject's common name.
/// `Err`: the names the certificate carries (or why it cannot be read), for the operator.
pub fn names(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> Result<(), String> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    match rustls::client::verify_server_name(&parsed, name) {
        Ok(()) => Ok(()),
        Err(rustls::Error::InvalidCertificate(e)) => {
            Err(name_problem(&e)
                .unwrap_or_else(|| format!("the certificate cannot be checked: {e}")))
        }
        Err(e) => Err(format!("the certificate cannot be checked: {e}")),
    }
}

/// What a certificate that does not name the host a client asked for names instead (`it
/// names a.example, IP 10.0.0.2`), as [`names`] says it; `None` when `e` is not about the name.
pub fn name_problem(e: &rustls::CertificateError) -> Option<String> {
    match e {
        rustls::CertificateError::NotValidForNameContext { presented, .. } => {
            let carried: Vec<String> = presented.iter().map(|n| readable_name(n)).collect();
            Some(if carried.is_empty() {
                "it names no host (no DNS or IP subjectAltName)".to_owned()
            } else {
                format!("it names {}", carried.join(", "))
            })
        }
        rustls::CertificateError::NotValidForName => Some("it does not name it".to_owned()),
        _ => None,
    }
}

/// The host a command on the server's machine calls the server at, when it connects to
/// `ip` (the configured bind address) and trusts the server's own certificate file: `None`
/// when the certificate names `ip` itself (an IP SAN: the URL is `https://ip:port`), else
/// the first DNS name it carries that is not a wildcard (the URL names it and the connection
/// still goes to `ip`, so the certificate is verified for a name it was made for). `None`
/// too when the file cannot be read or carries no such name: the URL is then `ip`'s, and its
/// failure says why.
pub fn own_host(files: &TlsFiles, ip: std::net::IpAddr) -> Option<String> {
    let certs = certificates(&files.cert).ok()?;
    let leaf = certs.first()?;
    let parsed = rustls::server::ParsedCertificate::try_from(leaf).ok()?;
    let carried =
        match rustls::client::verify_server_name(&parsed, &ServerName::IpAddress(ip.into())) {
            Ok(()) => return None,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { presented, .. },
            )) => presented,
            Err(_) => return None,
        };
    carried.iter().map(|n| readable_name(n)).find(|n| {
        !n.starts_with("IP ") && !n.contains('*') && ServerName::try_from(n.as_str()).is_ok()
    })
}

/// A subjectAltName as webpki reports it (`DnsName("a.example")`, `IpAddress(10.0.0.2)`),
/// written as an operator knows it (`a.example`, `IP 10.0.0.2`); anything else as it is.
fn readable_name(presented: &str) -> String {
    if let Some(dns) = presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
    {
        return dns.to_owned();
    }
    if let Some(ip) = presented
        .strip_prefix("IpAddress(")
        .and_then(|n| n.strip_suffix(')'))
    {
        return format!("IP {ip}");
    }
    presented.to_owned()
}

/// Why `key`'s certificate cannot serve an instance that `must` names (see [`MustName`]), as
/// one sentence naming the host, the names the certificate carries and what to change; `Ok`
/// when there is no such host or the certificate names it.
fn check_name(key: &CertifiedKey, must: Option<&MustName>) -> Result<(), String> {
    let Some(must) = must else {
        return Ok(());
    };
    let cert = key
        .end_entity_cert()
        .map_err(|e| format!("no certificate to check: {e}"))?;
    names(cert, &must.name).map_err(|carried| {
        format!(
            "the certificate does not name {host}, the host of this instance's cluster URL {url}; \
             {carried}. The other instances verify it for that host and would refuse to forward \
             to this instance: set NETAPI_CHAT_CLUSTER_URL to an https:// URL whose host the \
             certificate names, or use a certificate that names {host}",
            host = must.host(),
            url = must.url,
        )
    })
}

/// The rustls server configuration of `files`, or what is wrong with them (naming the setting
/// and the file); `must`: a host the certificate must name (an instance of a cluster, see
/// [`MustName`]), at start and on every reload.
pub fn server_config(
    files: &TlsFiles,
    must: Option<&MustName>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let stamps = stamps(files);
    let key = certified_key(files, &provider)?;
    check_name(&key, must)
        .map_err(|e| format!("NETAPI_CHAT_TLS_CERT: {}: {e}", files.cert.display()))?;
    let resolver = ReloadingCert {
        files: files.clone(),
        must: must.cloned(),
        provider: Arc::clone(&provider),
        current: RwLock::new(Arc::new(key)),
        look: Mutex::new((Instant::now(), stamps)),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate chain and key of `files`, checked to belong together, or what is wrong
/// (naming the setting and the file).
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let cert_err = |p: String| format!("NETAPI_CHAT_TLS_CERT: {}: {p}", files.cert.display());
    let key_err = |p: String| format!("NETAPI_CHAT_TLS_KEY: {}: {p}", files.key.display());
    let certs = certificates(&files.cert).map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| key_err(pem_problem(&e, "private key")))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_err(format!(
            "does not match the certificate in {} (NETAPI_CHAT_TLS_CERT)",
            files.cert.display()
        )),
        other => key_err(format!("unusable: {other}")),
    })
}

/// The versions of the two files now (`None` when either cannot be `stat`ed).
fn stamps(files: &TlsFiles) -> Option<(Stamp, Stamp)> {
    let cert = std::fs::metadata(&files.cert).ok()?;
    let key = std::fs::metadata(&files.key).ok()?;
    Some((Stamp::of(&cert), Stamp::of(&key)))
}

/// The server's certificate, loaded again when its files change (see the module
/// documentation).
#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    /// The host a reloaded certificate must still name (a cluster's instance).
    must: Option<MustName>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last looked at, and their versions then.
    look: Mutex<(Instant, Option<(Stamp, Stamp)>)>,
}

impl ReloadingCert {
    /// Looks at the files when a look is due (one handshake at a time; the others go on
    /// with the certificate in force) and loads a changed pair.
    fn refresh(&self) {
        let Ok(mut look) = self.look.try_lock() else {
            return;
        };
        let now = Instant::now();
        if !look_due(look.0, now, RELOAD_CHECK) {
            return;
        }
        look.0 = now;
        let seen = stamps(&self.files);
        if seen == look.1 {
            return;
        }
        look.1 = seen;
        let loaded = certified_key(&self.files, &self.provider).and_then(|key| {
            check_name(&key, self.must.as_ref())
                .map(|()| key)
                .map_err(|e| format!("NETAPI_CHAT_TLS_CERT: {}: {e}", self.files.cert.display()))
        });
        match loaded {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(key);
                }
                // Routine (a renewal), not a problem: `info`.
                tracing::info!(
                    "TLS certificate reloaded from {}: new connections get it",
                    self.files.cert.display()
                );
            }
            // Through the log like every line written while serving (the start-up
            // `data_dir::warn` has no time or level in text mode; the operator review).
            Err(e) => tracing::warn!(
                "the changed TLS certificate pair is not used ({e}); the previous one stays in force"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// The TLS configuration callbacks to `https` notifyURLs are made with (issue 13): Mozilla's
/// root certificates (`webpki-roots`, so every machine trusts the same set, whatever its
/// system store holds) plus the PEM certificates of `NETAPI_CHAT_CALLBACK_CA_FILE`, for
/// receivers behind a private CA (and tests). ALPN offers `http/1.1` only: delivery speaks
/// HTTP/1.1 (see `notify::endpoints`). The error names the setting and the file.
pub fn callback_client_config(
    extra_roots: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    // The commands' verifier: a receiver's own self-signed certificate in the file is trusted
    // as itself too, `CA:TRUE` (as `openssl req -x509` makes it) included, which webpki alone
    // refused (`CaUsedAsEndEntity`) although the README tells operators to put it there.
    let files: Vec<(&str, &std::path::Path)> = extra_roots
        .map(|file| ("NETAPI_CHAT_CALLBACK_CA_FILE", file))
        .into_iter()
        .collect();
    command_client_config(&files)
}

/// The TLS client of the PostgreSQL connections (`sslmode=require` in
/// `NETAPI_CHAT_DATABASE_URL`): the database server's certificate is verified for its host
/// against Mozilla's roots plus `NETAPI_CHAT_DATABASE_CA_FILE` (a private CA's, as managed
/// databases hand out).
///
/// A database server's own self-signed certificate in that file is trusted as itself too,
/// `CA:TRUE` included (as `openssl req -x509`, the PostgreSQL documentation's recipe, makes
/// it), as for callbacks and cluster instances ([`KnownCertificates`]): webpki alone refused
/// it (`CaUsedAsEndEntity`; the PostgreSQL operator review). No ALPN: PostgreSQL's is its own.
pub fn database_client_config(
    extra_roots: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let files: Vec<(&str, &std::path::Path)> = extra_roots
        .map(|file| ("NETAPI_CHAT_DATABASE_CA_FILE", file))
        .into_iter()
        .collect();
    known_certificates_config(&files)
}

/// The TLS client a standby forwards to an `https://` leader with (issue 14, TLS between
/// instances): the leader's certificate is verified for the host of its cluster URL (a DNS
/// name, or an IP address against an IP SAN) against Mozilla's roots plus
/// `NETAPI_CHAT_CLUSTER_CA_FILE`, the private CA an operator's instances usually carry
/// certificates from, or the instances' own certificate when they share one: trusted as
/// itself too, self-signed with `CA:TRUE` (as `openssl req -x509` makes it) included, as the
/// commands trust it ([`command_client_config`]; with webpki alone such a cluster started and
/// its standbys answered `503` to everything, `CaUsedAsEndEntity`: an outside review). ALPN
/// offers `http/1.1` only: the leader serves HTTP/1.1 only ([`server_config`]), and the
/// forwarding client speaks it.
pub fn cluster_client_config(
    extra_roots: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let files: Vec<(&str, &std::path::Path)> = extra_roots
        .map(|file| ("NETAPI_CHAT_CLUSTER_CA_FILE", file))
        .into_iter()
        .collect();
    command_client_config(&files)
}

/// The TLS client of the commands that call a server over HTTPS (`backup` and `summary`,
/// `client`; see `crate::reach`): Mozilla's roots plus the PEM certificates of `files`, each
/// given with what names it in errors (a setting or an option). Those certificates are
/// trusted two ways: as roots, for a server whose certificate one of them issued; and as
/// themselves, for a server that presents one of them as its own ([`KnownCertificates`]), so
/// that the server's own certificate file (`NETAPI_CHAT_TLS_CERT`) is enough to trust it even
/// when it is self-signed with `CA:TRUE` (as `openssl req -x509` makes it by default, which
/// webpki refuses as a server's certificate) or issued by a private CA the file does not hold.
/// The host name is verified either way. ALPN offers `http/1.1`, what the server serves.
pub fn command_client_config(
    files: &[(&str, &std::path::Path)],
) -> Result<rustls::ClientConfig, String> {
    let mut config = known_certificates_config(files)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS client verifying with [`KnownCertificates`] over Mozilla's roots and `files`, no
/// ALPN (what [`command_client_config`] and [`database_client_config`] share).
fn known_certificates_config(
    files: &[(&str, &std::path::Path)],
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = command_verifier(files, &provider)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The verifier of [`command_client_config`].
fn command_verifier(
    files: &[(&str, &std::path::Path)],
    provider: &Arc<CryptoProvider>,
) -> Result<KnownCertificates, String> {
    let mut roots = mozilla_roots();
    let mut known = Vec::new();
    for (setting, file) in files {
        known.extend(add_roots(&mut roots, setting, file)?);
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| format!("TLS: {e}"))?;
    Ok(KnownCertificates { webpki, known })
}

/// The commands' certificate verifier ([`command_client_config`]): webpki's (the chain to a
/// root, the validity period, the host name); and when webpki finds no root for a certificate
/// (or refuses it as a `CA:TRUE` one) that is byte for byte one of `known`, that certificate,
/// for the names it carries. Its validity period was checked before either refusal
/// (webpki looks at it first), and the host name is checked here: verification is never off.
#[derive(Debug)]
struct KnownCertificates {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    known: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for KnownCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(refused) => refused,
        };
        let no_root = match &refused {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => true,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                is_ca_as_server(other)
            }
            _ => false,
        };
        if !no_root || !self.known.iter().any(|k| k.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// An error with its causes, `: `-separated, each cause left out when the text so far already
/// says it (tokio-postgres says "error performing TLS handshake" and keeps rustls' reason as
/// its source; hyper's "client error (Connect)" keeps the I/O error): for the operator's log,
/// since it may name addresses. One walk for the store's and the cluster's messages.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// What stopped a connection, as far as a message to a person goes ([`stopped_by`]).
#[derive(Debug)]
pub enum Stopped<'a> {
    /// The TLS handshake failed with this (a certificate refused, an alert, not TLS at all).
    Tls(&'a rustls::Error),
    /// Nothing accepted the connection.
    Refused,
    /// The connection or the answer did not come in time.
    TimedOut,
    /// The peer closed or reset the connection before its answer began (hyper's "incomplete
    /// message", a reset, a broken pipe): a server stopping or killed with the request under
    /// way.
    Cut,
}

/// The first cause down `error`'s chain that says why a connection failed ([`Stopped`]):
/// one walk for every client that tells a person why (the standby's `503`, the commands'
/// messages). An I/O error's `source` skips the error it wraps (rustls' own, from the
/// handshake), so the walk goes through `get_ref` there.
pub fn stopped_by<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<Stopped<'a>> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(Stopped::Tls(tls));
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return Some(Stopped::Cut);
        }
        let io = e.downcast_ref::<std::io::Error>();
        use std::io::ErrorKind as K;
        match io.map(std::io::Error::kind) {
            Some(K::ConnectionRefused) => return Some(Stopped::Refused),
            Some(K::TimedOut) => return Some(Stopped::TimedOut),
            Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe) => {
                return Some(Stopped::Cut);
            }
            _ => {}
        }
        next = io
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static))
            .or_else(|| e.source());
    }
    None
}

/// Whether webpki refused a certificate because it is a CA's (`basicConstraints CA:TRUE`)
/// presented as a server's: rustls passes that refusal on as an opaque error, known by its
/// name only.
pub fn is_ca_as_server(other: &rustls::OtherError) -> bool {
    format!("{other:?}").contains("CaUsedAsEndEntity")
}

/// Mozilla's root certificates (`webpki-roots`: the same set on every machine).
fn mozilla_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// Adds the certificates of `file` (named `setting` in errors) to `roots`; gives them back.
fn add_roots(
    roots: &mut rustls::RootCertStore,
    setting: &str,
    file: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let err = |p: String| format!("{setting}: {}: {p}", file.display());
    let certs = certificates(file).map_err(err)?;
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| err(format!("not a usable root certificate: {e}")))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// The walk names a refused connection, a timeout, and a connection closed or reset
    /// before its answer (`Cut`, which a standby sends a `GET` again after), also when the I/O
    /// error is wrapped in another one; anything else is nobody's.
    #[test]
    fn stopped_by_tells_refused_timed_out_and_cut_apart() {
        use std::io::{Error, ErrorKind as K};
        let wrapped = |kind| Error::other(Error::new(kind, "inner"));
        let name = |e: &Error| match stopped_by(e) {
            Some(Stopped::Refused) => "refused",
            Some(Stopped::TimedOut) => "timed out",
            Some(Stopped::Cut) => "cut",
            Some(Stopped::Tls(_)) => "tls",
            None => "none",
        };
        assert_eq!(name(&wrapped(K::ConnectionRefused)), "refused");
        assert_eq!(name(&wrapped(K::TimedOut)), "timed out");
        for kind in [K::ConnectionReset, K::ConnectionAborted, K::BrokenPipe] {
            assert_eq!(name(&wrapped(kind)), "cut", "{kind:?}");
            assert_eq!(name(&Error::new(kind, "plain")), "cut", "{kind:?}");
        }
        assert_eq!(name(&wrapped(K::InvalidData)), "none");
    }

    /// A self-signed certificate with these subjectAltNames (an IP address becomes an IP SAN)
    /// and its key.
    fn made(sans: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let params = rcgen::CertificateParams::new(sans).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    fn dns(host: &str) -> ServerName<'static> {
        ServerName::try_from(host.to_owned()).unwrap()
    }

    fn ip(host: &str) -> ServerName<'static> {
        ServerName::IpAddress(host.parse::<IpAddr>().unwrap().into())
    }

    /// The rule of the standbys' TLS client: DNS names case-insensitively, a wildcard for one
    /// leftmost label only, IP addresses against IP SANs; a refusal lists the names carried.
    #[test]
    fn a_certificate_names_a_host_by_the_rule_of_the_standbys_tls_client() {
        let (cert, _) = made(&["chat-1.internal", "*.chat.internal", "10.0.0.2", "fd00::2"]);
        let cert = cert.der();
        for host in [
            dns("chat-1.internal"),
            dns("CHAT-1.Internal"),
            dns("a.chat.internal"),
            ip("10.0.0.2"),
            ip("fd00::2"),
        ] {
            assert_eq!(names(cert, &host), Ok(()), "{host:?}");
        }
        for host in [
            dns("chat-2.internal"),
            dns("a.b.chat.internal"),
            dns("chat.internal"),
            dns("chat-1.internal.example"),
            ip("10.0.0.3"),
            ip("fd00::3"),
        ] {
            let refused = names(cert, &host).unwrap_err();
            assert!(
                refused.starts_with("it names chat-1.internal, *.chat.internal, IP 10.0.0.2, IP "),
                "{host:?}: {refused}"
            );
        }
    }

    /// The subject's common name is not a name a client verifies (webpki ignores it): a
    /// certificate with the host only there names no host.
    #[test]
    fn a_common_name_alone_names_no_host() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chat-1.internal");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            names(cert.der(), &dns("chat-1.internal")),
            Err("it names no host (no DNS or IP subjectAltName)".to_owned())
        );
    }

    /// Writes `cert` and `key` as the PEM pair of `dir`.
    fn write_pair(
        dir: &std::path::Path,
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
    ) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A private directory for this test's files, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("netapi-chat-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn must(name: ServerName<'static>, url: &str) -> MustName {
        MustName {
            name,
            url: url.to_owned(),
        }
    }

    /// At start: a certificate that does not name the cluster URL's host is refused with one
    /// message naming the setting and file, the host, the URL, the names carried and the
    /// setting to change; one that names it (or no host to name) is accepted.
    #[test]
    fn the_server_config_refuses_a_certificate_that_does_not_name_the_cluster_host() {
        let dir = Dir::new("start");
        let (cert, key) = made(&["chat-1.internal", "10.0.0.2"]);
        let files = write_pair(&dir.0, &cert, &key);
        assert!(server_config(&files, None).is_ok());
        let named = must(dns("chat-1.internal"), "https://chat-1.internal:8443");
        assert!(server_config(&files, Some(&named)).is_ok());
        let other = must(ip("10.0.0.9"), "https://10.0.0.9:8443");
        let refused = server_config(&files, Some(&other)).unwrap_err();
        for part in [
            format!("NETAPI_CHAT_TLS_CERT: {}: ", files.cert.display()),
            "does not name 10.0.0.9".to_owned(),
            "cluster URL https://10.0.0.9:8443".to_owned(),
            "it names chat-1.internal, IP 10.0.0.2".to_owned(),
            "set NETAPI_CHAT_CLUSTER_URL".to_owned(),
        ] {
            assert!(refused.contains(&part), "{part:?} in {refused}");
        }
    }

    /// Looks at `reloading`'s files at the next handshake as if they had changed.
    fn look_again(reloading: &ReloadingCert) {
        let mut look = reloading.look.lock().unwrap();
        *look = (Instant::now().checked_sub(RELOAD_CHECK * 2).unwrap(), None);
    }

    fn in_force(reloading: &ReloadingCert) -> Vec<u8> {
        let current = reloading.current.read().unwrap();
        current.end_entity_cert().unwrap().to_vec()
    }

    /// While running: a renewed certificate that no longer names the cluster URL's host is not
    /// taken (the one in force stays), one that names it is.
    #[test]
    fn a_renewed_certificate_that_no_longer_names_the_cluster_host_is_not_taken() {
        let dir = Dir::new("reload");
        let (first, key) = made(&["chat-1.internal"]);
        let files = write_pair(&dir.0, &first, &key);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let reloading = ReloadingCert {
            files: files.clone(),
            must: Some(must(dns("chat-1.internal"), "https://chat-1.internal:8443")),
            current: RwLock::new(Arc::new(certified_key(&files, &provider).unwrap())),
            provider,
            look: Mutex::new((Instant::now(), stamps(&files))),
        };
        let (elsewhere, key) = made(&["chat-2.internal"]);
        write_pair(&dir.0, &elsewhere, &key);
        look_again(&reloading);
        reloading.refresh();
        assert_eq!(
            in_force(&reloading),
            first.der().to_vec(),
            "the first stays"
        );
        let (renewed, key) = made(&["chat-1.internal", "chat.example.com"]);
        write_pair(&dir.0, &renewed, &key);
        look_again(&reloading);
        reloading.refresh();
        assert_eq!(
            in_force(&reloading),
            renewed.der().to_vec(),
            "the renewed one"
        );
    }

    /// A self-signed certificate for `sans` with `basicConstraints CA:TRUE`, as
    /// `openssl req -x509` makes one by default, and its key.
    fn made_ca(
        subject: &str,
        sans: &[&str],
    ) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, subject);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    /// The commands' verifier with the certificates of `files` (PEM text each): what it says
    /// of a server presenting `chain` (its own certificate first) for `host`.
    fn command_verdict(
        dir: &Dir,
        files: &[String],
        chain: &[&rcgen::Certificate],
        host: ServerName<'static>,
    ) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier as _;
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                let path = dir.0.join(format!("trusted-{i}.pem"));
                std::fs::write(&path, pem).unwrap();
                path
            })
            .collect();
        let named: Vec<(&str, &std::path::Path)> =
            paths.iter().map(|p| ("--ca-file", p.as_path())).collect();
        let config = command_client_config(&named).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = command_verifier(&named, &provider).unwrap();
        let intermediates: Vec<CertificateDer<'_>> =
            chain[1..].iter().map(|c| c.der().clone()).collect();
        verifier
            .verify_server_cert(
                chain[0].der(),
                &intermediates,
                &host,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
    }

    /// What `backup`, `summary` and `client` trust: a server presenting one of the given
    /// certificates as its own (self-signed with `CA:TRUE`, or a leaf whose CA is not given),
    /// for the names it carries and no other; a server whose certificate a given CA issued;
    /// nothing else (no root, or a stranger's `CA:TRUE` certificate).
    #[test]
    fn the_commands_trust_the_given_certificates_for_their_names_only() {
        use rustls::CertificateError as C;
        let dir = Dir::new("command");
        let (openssl_like, _) = made_ca("localhost", &["localhost", "127.0.0.1"]);
        let (ca, issuer) = made_ca("Private CA", &[]);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["chat.internal".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let refused = |r: Result<(), rustls::Error>| match r {
            Err(rustls::Error::InvalidCertificate(c)) => c,
            other => panic!("not a refused certificate: {other:?}"),
        };

        // The server's own self-signed CA:TRUE certificate, for its names.
        let own = vec![openssl_like.pem()];
        assert_eq!(
            command_verdict(&dir, &own, &[&openssl_like], dns("localhost")),
            Ok(())
        );
        assert_eq!(
            command_verdict(&dir, &own, &[&openssl_like], ip("127.0.0.1")),
            Ok(())
        );
        let other_name = refused(command_verdict(
            &dir,
            &own,
            &[&openssl_like],
            dns("chat.example"),
        ));
        assert!(
            matches!(other_name, C::NotValidForNameContext { .. }),
            "{other_name:?}"
        );
        // The leaf alone (its CA not given), for its name; by its CA, through the chain.
        assert_eq!(
            command_verdict(&dir, &[leaf.pem()], &[&leaf], dns("chat.internal")),
            Ok(())
        );
        assert_eq!(
            command_verdict(&dir, &[ca.pem()], &[&leaf], dns("chat.internal")),
            Ok(())
        );
        assert!(matches!(
            refused(command_verdict(
                &dir,
                &[ca.pem()],
                &[&leaf],
                dns("chat-2.internal")
            )),
            C::NotValidForNameContext { .. }
        ));
        // Given nothing: no root for the leaf; a stranger's CA:TRUE certificate is refused as
        // such (the message names both).
        assert_eq!(
            refused(command_verdict(&dir, &[], &[&leaf], dns("chat.internal"))),
            C::UnknownIssuer
        );
        match refused(command_verdict(
            &dir,
            &[leaf.pem()],
            &[&openssl_like],
            dns("localhost"),
        )) {
            C::Other(other) => assert!(is_ca_as_server(&other), "{other:?}"),
            other => panic!("{other:?}"),
        }
    }

    /// The standby's client for an `https://` leader speaks HTTP/1.1 (what the leader serves)
    /// and refuses a CA file without certificates, naming its setting, so `check-config` and
    /// the start say which file is wrong.
    #[test]
    fn the_cluster_client_names_its_ca_setting_and_offers_http_1_1() {
        let config = cluster_client_config(None).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let file =
            std::env::temp_dir().join(format!("netapi-chat-cluster-ca-{}", std::process::id()));
        std::fs::write(&file, "not a certificate\n").unwrap();
        let refused = cluster_client_config(Some(&file)).unwrap_err();
        let _ = std::fs::remove_file(&file);
        assert!(
            refused.starts_with("NETAPI_CHAT_CLUSTER_CA_FILE: "),
            "{refused}"
        );
    }

    /// Moves what `from` has to send into `to`, which reads it.
    fn pump(
        from: &mut rustls::Connection,
        to: &mut rustls::Connection,
    ) -> Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    /// A half-written PEM file is said in words, never as the bytes of its marker.
    #[test]
    fn a_broken_pem_file_is_said_in_words() {
        let cut = rustls::pki_types::pem::Error::MissingSectionEnd {
            end_marker: b"-----END CERTIFICATE-----".to_vec(),
        };
        let said = pem_problem(&cut, "certificate");
        assert!(
            said.contains("`-----END CERTIFICATE-----`") && !said.contains("[45"),
            "{said}"
        );
    }

    /// A standby reaches an HTTPS leader whose certificate, the one every instance serves and
    /// `NETAPI_CHAT_CLUSTER_CA_FILE` names, is self-signed with `CA:TRUE` (`openssl req
    /// -x509`): the handshake completes for the cluster URL's host, and fails for another.
    /// Before, webpki refused it (`CaUsedAsEndEntity`) and every forward was a `503`. The
    /// same for a PostgreSQL server's certificate in `NETAPI_CHAT_DATABASE_CA_FILE` (the
    /// start was refused: the PostgreSQL operator review).
    #[test]
    fn the_cluster_and_database_clients_trust_a_servers_own_self_signed_certificate() {
        for config in [cluster_client_config, database_client_config] {
            trusts_its_own_self_signed_certificate(config);
        }
    }

    fn trusts_its_own_self_signed_certificate(
        config: fn(Option<&std::path::Path>) -> Result<rustls::ClientConfig, String>,
    ) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = Dir::new("cluster-own");
        let file = dir.0.join("cluster.pem");
        std::fs::write(&file, cert.pem()).unwrap();
        let client = Arc::new(config(Some(&file)).unwrap());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
        );
        let handshake = |host: &'static str| -> Result<(), rustls::Error> {
            let mut c = rustls::Connection::Client(
                rustls::ClientConnection::new(
                    Arc::clone(&client),
                    ServerName::try_from(host).unwrap(),
                )
                .unwrap(),
            );
            let mut s = rustls::Connection::Server(
                rustls::ServerConnection::new(Arc::clone(&server)).unwrap(),
            );
            for _ in 0..8 {
                pump(&mut c, &mut s)?;
                pump(&mut s, &mut c)?;
                if !c.is_handshaking() && !s.is_handshaking() {
                    return Ok(());
                }
            }
            panic!("the handshake did not end");
        };
        assert_eq!(handshake("127.0.0.1"), Ok(()));
        assert_eq!(handshake("localhost"), Ok(()));
        assert!(handshake("chat.example").is_err());
    }
}
