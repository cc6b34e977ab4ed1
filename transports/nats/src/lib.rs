//! keyman's nats transport.
