//! The worker subcommands: `request`, `expire` and `invalidate`.

use crate::cli::{Connection, KeysFrom};
use crate::input;
use keyman::service::{KeyClient, KeySource};
use keyman::{KeyError, Timestamp};

async fn client(conn: &Connection) -> Result<KeyClient, KeyError> {
    let bus = keyman::service::connect_url(conn.url()).await?;
    KeyClient::connect(bus, conn.client_config()).await
}

fn print_key(conn: &Connection, key: &str) {
    if conn.json {
        println!("{}", serde_json::json!({ "key": conn.show(key) }));
    } else {
        println!("{}", conn.show(key));
    }
}

/// `keyman request`: a key for a platform.
pub(crate) async fn request(conn: &Connection, platform: &str) -> Result<(), KeyError> {
    let key = client(conn).await?.request(platform).await?;
    print_key(conn, &key);
    Ok(())
}

/// `keyman expire`: one line (the key handed out instead) for each key
/// reported as rate limited until `reset` (Unix seconds).
pub(crate) async fn expire(
    conn: &Connection,
    platform: &str,
    key: Option<String>,
    from: &KeysFrom,
    reset: u64,
) -> Result<(), KeyError> {
    let keys = input::keys(key.into_iter().collect(), from.keys_from.as_deref())?;
    let client = client(conn).await?;
    for key in keys {
        let next = client
            .expire(platform, &key, Timestamp::from_secs(reset))
            .await?;
        print_key(conn, &next);
    }
    Ok(())
}

/// `keyman invalidate`: one line (the key handed out instead) for each key
/// reported as invalid.
pub(crate) async fn invalidate(
    conn: &Connection,
    platform: &str,
    key: Option<String>,
    from: &KeysFrom,
) -> Result<(), KeyError> {
    let keys = input::keys(key.into_iter().collect(), from.keys_from.as_deref())?;
    let client = client(conn).await?;
    for key in keys {
        let next = client.invalidate(platform, &key).await?;
        print_key(conn, &next);
    }
    Ok(())
}
