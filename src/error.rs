//! `KeyError` belongs to the service layer (`keyman::service::KeyError`, feature
//! `tokio`); this path is kept so that `keyman::error::KeyError` still names it.

#[cfg(feature = "tokio")]
pub use crate::service::KeyError;
