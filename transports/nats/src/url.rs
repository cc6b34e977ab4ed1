//! NATS server URLs: a comma-separated list, and the credentials written into them.

use async_nats::ServerAddr;
use keyman_transport::{BusError, ErrorDetail};
use std::str::FromStr;

/// Parses a comma-separated list of server URLs.
pub(crate) fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, BusError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            ServerAddr::from_str(part).map_err(|err| {
                BusError::Config(ErrorDetail::with_source(
                    format!("bad NATS URL: {err}"),
                    err,
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(BusError::Config("no NATS server URL given".into()));
    }
    Ok(servers)
}

/// Credentials written into a server URL.
pub(crate) enum Credentials {
    /// `nats://user:password@host`.
    UserPassword(String, String),
    /// `nats://token@host`.
    Token(String),
}

/// The credentials in a server URL, which the NATS client does not pick up by itself.
pub(crate) fn url_credentials(addr: &ServerAddr) -> Option<Credentials> {
    let user = percent_decode(addr.username()?);
    Some(match addr.password() {
        Some(password) => Credentials::UserPassword(user, percent_decode(password)),
        None => Credentials::Token(user),
    })
}

/// Decodes the `%XX` escapes of a URL part; leaves malformed escapes as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_in_credentials_are_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        let addr = ServerAddr::from_str("nats://al%20ice:p%40ss@127.0.0.1:4222").expect("url");
        match url_credentials(&addr) {
            Some(Credentials::UserPassword(user, password)) => {
                assert_eq!((user.as_str(), password.as_str()), ("al ice", "p@ss"));
            }
            _ => panic!("expected a user and a password"),
        }
        let addr = ServerAddr::from_str("nats://t0ken@127.0.0.1").expect("url");
        assert!(
            matches!(url_credentials(&addr), Some(Credentials::Token(token)) if token == "t0ken")
        );
        let addr = ServerAddr::from_str("nats://127.0.0.1").expect("url");
        assert!(url_credentials(&addr).is_none());
    }
}
