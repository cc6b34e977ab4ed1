//! How large the parts of a message may be. Every limit here bounds what one
//! remote sender can make the orchestrator keep: a held request keeps its ids,
//! the pool keeps key and platform names.
//!
//! What happens to a message beyond them is in the [table of the protocol
//! docs](crate::protocol#limits).
//!
//! A `requester_id` that EXPIRE or INVALIDATE carry is not used; a longer one is
//! ignored. A number as id is as long as its decimal digits. Lengths count
//! bytes of UTF-8, as sent.

/// The longest `requester_id` or `request_id`, in bytes. Augur's clients send
/// their process id; keyman's clients a short generated name.
pub const MAX_ID_LEN: usize = 256;

/// The longest key (`key_str`), in bytes. GitHub's tokens have at most 93
/// characters, GitLab's about 26; 1 KiB leaves room for JWTs of other APIs.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest platform name (`key_platform`), in bytes. Augur's are
/// `github_rest`, `github_graphql`, `github_search` and `gitlab_rest`.
pub const MAX_PLATFORM_LEN: usize = 128;

/// The length limit of a text field, if it has one.
pub(super) fn max_len(field: &str) -> Option<usize> {
    match field {
        "key_str" => Some(MAX_KEY_LEN),
        "key_platform" => Some(MAX_PLATFORM_LEN),
        "requester_id" | "request_id" => Some(MAX_ID_LEN),
        _ => None,
    }
}
