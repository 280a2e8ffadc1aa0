//! How the commands that call a server reach it, over HTTP or HTTPS: `backup` and `summary`
//! ([`crate::admin`], with the server's configuration) and `client` ([`crate::client`], with
//! its own options). Both make their reqwest client here, with the project's TLS client
//! ([`crate::tls::command_client_config`]: Mozilla's roots plus the certificate files the
//! command is given, the host name always verified) rather than reqwest's platform verifier,
//! so that what a command trusts is what its README section says on every machine; and both
//! say here, in one sentence naming the URL, why a request got no answer: the certificate is
//! not trusted, does not name the host, has expired; nothing listens there; the other end
//! does not speak TLS, or speaks only TLS.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

/// What a command trusts for an `https://` server besides Mozilla's roots: certificate files,
/// each with what names it (a setting or an option), and what to do when a certificate is
/// not trusted.
#[derive(Clone, Debug)]
pub struct Trust {
    files: Vec<(String, PathBuf)>,
    /// How to trust a server that is not, for the message (e.g. "give --ca-file …").
    remedy: String,
}

impl Trust {
    /// Mozilla's roots only; `remedy`: how to trust another server, for the message.
    pub fn new(remedy: &str) -> Trust {
        Trust {
            files: Vec::new(),
            remedy: remedy.to_owned(),
        }
    }

    /// Also the certificates of `file`, when there is one (`what` names it in messages).
    pub fn with(mut self, what: &str, file: Option<&Path>) -> Trust {
        if let Some(file) = file {
            self.files.push((what.to_owned(), file.to_path_buf()));
        }
        self
    }

    /// A reqwest client builder whose HTTPS connections trust this; the error names the file
    /// that cannot be read.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let files: Vec<(&str, &Path)> = self
            .files
            .iter()
            .map(|(what, file)| (what.as_str(), file.as_path()))
            .collect();
        let tls = crate::tls::command_client_config(&files)?;
        Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
    }

    /// What is trusted, for messages: `Mozilla's roots and NETAPI_CHAT_TLS_CERT (/etc/…)`.
    fn described(&self) -> String {
        let mut text = "Mozilla's roots".to_owned();
        for (i, (what, file)) in self.files.iter().enumerate() {
            text.push_str(if i + 1 == self.files.len() {
                " and "
            } else {
                ", "
            });
            text.push_str(&format!("{what} ({})", file.display()));
        }
        text
    }
}

/// Why a request to `url` got no answer, as one sentence for the operator: `cannot reach the
/// server at URL: REASON`.
pub fn unreachable(url: &str, error: &reqwest::Error, trust: &Trust) -> String {
    format!(
        "cannot reach the server at {url}: {}",
        reason(url, error, trust)
    )
}

/// The reason of [`unreachable`]: the first cause down `error`'s chain that says something to
/// an operator (a TLS refusal, a refused connection), else the innermost cause's text.
pub fn reason(url: &str, error: &reqwest::Error, trust: &Trust) -> String {
    use crate::tls::Stopped;
    match crate::tls::stopped_by(error) {
        Some(Stopped::Tls(tls)) => return tls_reason(tls, trust),
        Some(Stopped::Refused) => {
            return "connection refused: nothing listens at that address and port (is the \
                    server running, and is this its address?)"
                .to_owned();
        }
        Some(Stopped::TimedOut | Stopped::Cut) | None => {}
    }
    let mut innermost = error.to_string();
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_parse())
            && url.starts_with("http://")
        {
            return format!(
                "no HTTP answer ({hyper}): if the server serves HTTPS (NETAPI_CHAT_TLS_CERT), \
                 its port speaks HTTPS only: use https://"
            );
        }
        innermost = e.to_string();
        next = e.source();
    }
    if error.is_timeout() {
        return format!("no answer in time ({innermost})");
    }
    innermost
}

/// What a TLS refusal means for the operator.
fn tls_reason(e: &rustls::Error, trust: &Trust) -> String {
    use rustls::CertificateError as C;
    let untrusted = |why: &str| {
        format!(
            "its certificate is not trusted: {why} (trusted: {}); {}",
            trust.described(),
            trust.remedy
        )
    };
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                untrusted("no certificate this command trusts issued it, and it is none of them")
            }
            C::Other(other) if crate::tls::is_ca_as_server(other) => untrusted(
                "it is a CA certificate (basicConstraints CA:TRUE) presented as the server's own, \
                 and none this command trusts",
            ),
            C::BadSignature => untrusted("its signature does not verify"),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                let host = match c {
                    C::NotValidForNameContext { expected, .. } => {
                        format!(" {}", expected.to_str())
                    }
                    _ => String::new(),
                };
                format!(
                    "its certificate does not name the host{host} ({}): call the server at a \
                     host its certificate names (--url)",
                    crate::tls::name_problem(c).unwrap_or_default()
                )
            }
            C::Expired | C::ExpiredContext { .. } => format!("its certificate has expired ({c})"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("its certificate is not valid yet ({c})")
            }
            other => format!("its certificate is refused: {other}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "it does not speak TLS there (a plain-HTTP server? then use http://)".to_owned()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the TLS handshake (alert {alert:?})")
        }
        other => format!("TLS: {other}"),
    }
}
