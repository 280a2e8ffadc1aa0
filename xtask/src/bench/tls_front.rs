//! HTTPS receivers that never keep a connection (`cargo xtask bench --postgres
//! --https-receivers`): a TLS front before each callback listener, with a self-signed
//! certificate for `127.0.0.1` that the servers trust (`NETAPI_CHAT_CALLBACK_CA_FILE`), which
//! closes each connection after its first answer. Every attempt then pays what a sporadic
//! receiver costs its sender (a receiver that hears from the server less often than every
//! few seconds finds no kept-alive connection): a TCP connection and a TLS handshake.
//! The front's own work is in the harness's process, not the servers'.

use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The certificate and the acceptor of every front.
pub struct TlsFront {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The PEM file of the certificate, for `NETAPI_CHAT_CALLBACK_CA_FILE`.
    pub ca_file: PathBuf,
}

impl TlsFront {
    /// A certificate for `127.0.0.1` (an IP SAN), written into `dir`.
    pub fn new(dir: &Path) -> Result<TlsFront> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ]))];
        let cert = params.self_signed(&key)?;
        std::fs::create_dir_all(dir)?;
        let ca_file = dir.join("callback-ca.pem");
        std::fs::write(&ca_file, cert.pem())
            .with_context(|| format!("writing {}", ca_file.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
        Ok(TlsFront {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_file,
        })
    }

    /// An `https://127.0.0.1:PORT/…` URL for the listener at `http_url`: each connection to
    /// it is relayed to the listener until the listener's first answer, then closed.
    pub async fn front(&self, http_url: &str) -> Result<String> {
        let rest = http_url
            .strip_prefix("http://")
            .context("a listener URL is http://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let upstream: SocketAddr = authority.parse().context("a listener's address")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = once(acceptor, conn, upstream).await;
                });
            }
        });
        Ok(format!("https://127.0.0.1:{port}{path}"))
    }
}

/// One connection: TLS, relayed to `upstream` until its first answer, then closed.
async fn once(
    acceptor: tokio_rustls::TlsAcceptor,
    conn: tokio::net::TcpStream,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let tls = acceptor.accept(conn).await?;
    let up = tokio::net::TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (mut tls_r, mut tls_w) = tokio::io::split(tls);
    let (mut up_r, mut up_w) = up.into_split();
    let to_listener = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tls_r, &mut up_w).await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let n = up_r.read(&mut buf).await?;
    tls_w.write_all(&buf[..n]).await?;
    tls_w.flush().await?;
    let _ = tls_w.shutdown().await;
    to_listener.abort();
    Ok(())
}
