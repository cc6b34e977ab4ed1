//! The embedded key pool: keyman in one process, without a server.
