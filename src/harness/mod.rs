//! The test and fuzz harness of the core: not for programs that use keyman.
//!
//! - [`Driver`] (in `driver`): the one driver of an [`Engine`](crate::Engine)
//!   under test, with a virtual clock that steps to the next timeout;
//!   [`drain`] / [`drain_each`] empty an engine's outputs in the documented
//!   order (the simulator drains through them too).
//! - [`invariants`]: the one invariant checker ([`Checker`], [`check_pool`],
//!   [`Snapshot`]), run by the driver after every input; [`leases`]: its side
//!   of the quota extension (the leases seen lent and the budgets of accounts).
//! - [`Operation`] (in `operation`): one thing that happens to an engine,
//!   `arbitrary::Arbitrary` with the feature `arbitrary` (the fuzz targets);
//!   the property tests generate it with `quickcheck`. The quota extension's
//!   messages are in [`quota_ops`]; [`Setup`] (in `setup`) is the engine
//!   configuration a run uses (floors, strategies, lease cap and duration).
//! - [`fuzz`]: the bodies of the fuzz targets in `fuzz/`, kept here so that the
//!   test suite runs them too (`tests/fuzz_in_suite.rs`).
//! - The keys, platforms, message types and start time they all use.

pub mod driver;
pub mod fuzz;
pub mod invariants;
pub mod leases;
pub mod operation;
pub mod payload;
pub mod quota_ops;
mod replies;
pub mod setup;

pub use driver::{Driver, Outputs, drain, drain_each};
pub use invariants::{Checker, Snapshot, Violation, check_pool};
pub use operation::{Channel, Clock, Message, Operation, Payload};
pub use quota_ops::{AccountPublish, Context, LeaseNew, LeaseRef, Report};
pub use setup::{Setup, Strategy};

/// The keys the harness publishes. Long enough that no masked form and no
/// other text the engine produces can contain one by accident.
pub const KEYS: [&str; 4] = [
    "ghp_fuzzKey0aaaaaaaaaaaaaaaaaa",
    "ghp_fuzzKey1bbbbbbbbbbbbbbbbbb",
    "glpat-fuzzKey2cccccccccccccccc",
    "ghp_fuzzKey3dddddddddddddddddd",
];

/// The platforms the harness uses.
pub const PLATFORMS: [&str; 3] = ["github_rest", "github_graphql", "gitlab_rest"];

/// The message types of both channels.
pub const TYPES: [&str; 12] = [
    "NEW",
    "EXPIRE",
    "INVALIDATE",
    "PUBLISH",
    "UNPUBLISH",
    "ACK",
    "LIST_PLATFORMS",
    "LIST_KEYS",
    "LIST_INVALID_KEYS",
    "STATUS",
    "SHUTDOWN",
    "REPORT",
];

/// Where the harness starts its clock: 2023-11-14, in Unix epoch milliseconds.
pub const START_MILLIS: u64 = 1_700_000_000_000;
