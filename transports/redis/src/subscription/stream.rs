//! The byte stream under a subscription connection: TCP for `redis://`, TLS
//! over TCP for `rediss://` (feature `tls`, rustls with ring, trusting the
//! system's root certificates as the Redis client does).

use crate::bus::BusShared;
use keyman_transport::BusError;
use redis::ConnectionAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connected stream that a subscription reads and writes.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connects to the bus's server: [`BusError::Disconnected`] if it cannot be
/// reached (or the TLS handshake fails), [`BusError::Config`] for an address
/// this transport does not subscribe over.
pub(crate) async fn connect(bus: &BusShared) -> Result<Box<dyn Io>, BusError> {
    match bus.client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) => Ok(Box::new(tcp(bus, host, *port).await?)),
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => tls(bus, host, *port, *insecure).await,
        other => Err(BusError::Config(
            format!("subscriptions connect over TCP only, not to {other}").into(),
        )),
    }
}

async fn tcp(bus: &BusShared, host: &str, port: u16) -> Result<TcpStream, BusError> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|err| bus.bus_error(&err.into()))?;
    // Only PING is ever written; it should not wait for more.
    stream
        .set_nodelay(true)
        .map_err(|err| bus.bus_error(&err.into()))?;
    Ok(stream)
}

#[cfg(feature = "tls")]
async fn tls(
    bus: &BusShared,
    host: &str,
    port: u16,
    insecure: bool,
) -> Result<Box<dyn Io>, BusError> {
    use rustls::pki_types::ServerName;
    if insecure {
        return Err(BusError::Config(
            "rediss:// URLs with #insecure (no certificate check) are not supported".into(),
        ));
    }
    let config = tls_config()?;
    let name = ServerName::try_from(host.to_owned()).map_err(|err| {
        BusError::Config(keyman_transport::ErrorDetail::with_source(
            format!("{host:?} is not a name a TLS certificate can be checked against"),
            err,
        ))
    })?;
    let stream = tcp(bus, host, port).await?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|err| bus.bus_error(&err.into()))?;
    Ok(Box::new(stream))
}

#[cfg(not(feature = "tls"))]
async fn tls(
    _bus: &BusShared,
    _host: &str,
    _port: u16,
    _insecure: bool,
) -> Result<Box<dyn Io>, BusError> {
    Err(BusError::Config(
        "rediss:// URLs need the `tls` feature of keyman-redis".into(),
    ))
}

/// The TLS settings of every subscription: ring, the safe protocol versions,
/// the system's root certificates; made once per process.
#[cfg(feature = "tls")]
fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, BusError> {
    use std::sync::{Arc, OnceLock};
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, BusError>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            if let Some(err) = native.errors.into_iter().next() {
                return Err(BusError::Config(
                    keyman_transport::ErrorDetail::with_source(
                        format!("cannot read the system's root certificates: {err}"),
                        err,
                    ),
                ));
            }
            for certificate in native.certs {
                roots.add(certificate).map_err(|err| {
                    BusError::Config(keyman_transport::ErrorDetail::with_source(
                        format!("unusable system root certificate: {err}"),
                        err,
                    ))
                })?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|err| {
                    BusError::Config(keyman_transport::ErrorDetail::with_source(
                        format!("TLS settings: {err}"),
                        err,
                    ))
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}
