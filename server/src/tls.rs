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
        other => format!("not a valid PEM file: {other:?}"),
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
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { presented, .. },
        )) => {
            let carried: Vec<String> = presented.iter().map(|n| readable_name(n)).collect();
            Err(if carried.is_empty() {
                "it names no host (no DNS or IP subjectAltName)".to_owned()
            } else {
                format!("it names {}", carried.join(", "))
            })
        }
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
            Err("it does not name it".to_owned())
        }
        Err(e) => Err(format!("the certificate cannot be checked: {e}")),
    }
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
                crate::data_dir::warn(&format!(
                    "TLS certificate reloaded from {}: new connections get it",
                    self.files.cert.display()
                ));
            }
            Err(e) => crate::data_dir::warn(&format!(
                "the changed TLS certificate pair is not used ({e}); the previous one stays in force"
            )),
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
    let mut config = client_config("NETAPI_CHAT_CALLBACK_CA_FILE", extra_roots)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS client of the PostgreSQL connections (`sslmode=require` in
/// `NETAPI_CHAT_DATABASE_URL`): the database server's certificate is verified for its host
/// against Mozilla's roots plus `NETAPI_CHAT_DATABASE_CA_FILE` (a private CA's, as managed
/// databases hand out).
pub fn database_client_config(
    extra_roots: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    client_config("NETAPI_CHAT_DATABASE_CA_FILE", extra_roots)
}

/// The TLS client a standby forwards to an `https://` leader with (issue 14, TLS between
/// instances): the leader's certificate is verified for the host of its cluster URL (a DNS
/// name, or an IP address against an IP SAN) against Mozilla's roots plus
/// `NETAPI_CHAT_CLUSTER_CA_FILE`, the private CA an operator's instances usually carry
/// certificates from. ALPN offers `http/1.1` only: the leader serves HTTP/1.1 only
/// ([`server_config`]), and the forwarding client speaks it.
pub fn cluster_client_config(
    extra_roots: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let mut config = client_config("NETAPI_CHAT_CLUSTER_CA_FILE", extra_roots)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting Mozilla's roots plus the certificates of `extra_roots`
/// (named `setting` in errors).
fn client_config(
    setting: &str,
    extra_roots: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = extra_roots {
        let err = |p: String| format!("{setting}: {}: {p}", file.display());
        for cert in certificates(file).map_err(err)? {
            roots
                .add(cert)
                .map_err(|e| err(format!("not a usable root certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

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
}
