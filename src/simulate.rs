//! `keyman simulate`: the real Engine in virtual time against a simulated rate-limited API.
