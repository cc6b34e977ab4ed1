//! The `keyman` command-line program.
fn main() {}
