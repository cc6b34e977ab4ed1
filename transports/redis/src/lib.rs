//! keyman's redis transport.
