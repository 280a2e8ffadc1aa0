//! TLS to PostgreSQL with the rustls the server already uses (tokio-postgres's `MakeTlsConnect`
//! over `tokio-rustls`): taken when `NETAPI_CHAT_DATABASE_URL` says `sslmode=require`, and then
//! the database server's certificate is verified for the URL's host
//! (`tls::database_client_config`: Mozilla's roots plus `NETAPI_CHAT_DATABASE_CA_FILE`). That
//! is stricter than libpq's `require` (which encrypts without verifying): a connection that
//! could be intercepted is no better than a plain one. Every other `sslmode` (the default is
//! `prefer`) connects without TLS, as before ([`connector_for`]). Channel binding
//! (`SCRAM-SHA-256-PLUS`) is not offered: SCRAM without it is what the server then uses.
//!
//! A crate exists for this (`tokio-postgres-rustls`), but it brings `ring` and X.509 parsing
//! beside the `aws-lc-rs` build of rustls the server has; these fifty lines do not.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Makes one verifying TLS client per connection (tokio-postgres asks with the host's name).
#[derive(Clone)]
pub struct MakeRustls(Arc<rustls::ClientConfig>);

/// The connector for `config`'s connections: TLS for `sslmode=require` (and `config` is left
/// as it is), otherwise `config` is set to `sslmode=disable` so that the connector is never
/// used (`prefer` would try TLS and then fail on a certificate it cannot verify instead of
/// going on in plain text as it always has here).
pub fn connector_for(
    config: &mut tokio_postgres::Config,
    tls: Arc<rustls::ClientConfig>,
) -> MakeRustls {
    if config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
    }
    MakeRustls(tls)
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// Called for every host, TLS or not (a unix socket's "host" is no name at all): a name
    /// that cannot be verified fails the handshake, if there is one, not the connection.
    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())
            .map_err(|e| format!("`{domain}` cannot be checked against a certificate: {e}"));
        Ok(RustlsConnect {
            config: Arc::clone(&self.0),
            name,
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: Result<rustls::pki_types::ServerName<'static>, String>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self
                .name
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(RustlsStream(connector.connect(name, stream).await?))
        })
    }
}

/// A TLS connection to the database.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;

    fn tls() -> Arc<rustls::ClientConfig> {
        Arc::new(crate::tls::database_client_config(None).unwrap())
    }

    #[test]
    fn only_sslmode_require_takes_tls() {
        for (url, mode) in [
            (
                "postgres://u@db.example/x?sslmode=require",
                SslMode::Require,
            ),
            ("postgres://u@db.example/x?sslmode=prefer", SslMode::Disable),
            ("postgres://u@db.example/x", SslMode::Disable),
            (
                "postgres://u@db.example/x?sslmode=disable",
                SslMode::Disable,
            ),
        ] {
            let mut config = tokio_postgres::Config::from_str(url).unwrap();
            let _ = connector_for(&mut config, tls());
            assert_eq!(config.get_ssl_mode(), mode, "{url}");
        }
    }
}
