//! Redis URLs: which schemes this build accepts, and the client for one.

use keyman_transport::{BusError, ErrorDetail};

/// Checks the URL and makes a client for it, without connecting.
pub(crate) fn open_client(url: &str) -> Result<redis::Client, BusError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis") => {}
        Some("rediss") if cfg!(feature = "tls") => {}
        Some("rediss") => {
            return Err(BusError::Config(
                "rediss:// URLs need the `tls` feature of keyman-redis".into(),
            ));
        }
        _ => {
            return Err(BusError::Config(
                "a Redis URL starts with redis:// or rediss://".into(),
            ));
        }
    }
    #[cfg(feature = "tls")]
    install_crypto_provider();
    redis::Client::open(url).map_err(|err| {
        BusError::Config(ErrorDetail::with_source(
            format!("bad Redis URL: {err}"),
            err,
        ))
    })
}

/// Makes ring the process-wide TLS crypto provider unless one is chosen already.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    // Fails only when a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
