//! `keyman simulate`.
