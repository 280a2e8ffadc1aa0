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

use crate::auth::watched::{Stamp, look_due};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// The rustls server configuration of `files`, or what is wrong with them (naming the setting
/// and the file).
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let stamps = stamps(files);
    let key = certified_key(files, &provider)?;
    let resolver = ReloadingCert {
        files: files.clone(),
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
        match certified_key(&self.files, &self.provider) {
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
                "the changed TLS certificate pair does not load ({e}); the previous one stays in force"
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
