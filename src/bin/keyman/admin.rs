//! The admin subcommands: `publish`, `unpublish`, `forget`, the lists
//! (`platforms`, `keys`, `invalid`), `status`, `ping` and `shutdown`.

use crate::cli::{Connection, KeysFrom};
use crate::{input, watch};
use keyman::service::{KeyAdmin, KeyPublisher};
use keyman::{KeyError, Masked};

async fn publisher(conn: &Connection) -> Result<KeyPublisher, KeyError> {
    let bus = keyman::service::connect_url(conn.url()).await?;
    KeyPublisher::connect(bus, conn.client_config()).await
}

fn print_list(conn: &Connection, items: &[String], keys: bool) {
    let shown: Vec<String> = items
        .iter()
        .map(|k| if keys { conn.show(k) } else { k.clone() })
        .collect();
    if conn.json {
        println!("{}", serde_json::Value::from(shown));
    } else {
        for s in shown {
            println!("{s}");
        }
    }
}

/// `keyman publish` (`publish`) and `keyman unpublish` (`!publish`): the keys
/// given or read with `--keys-from`, on one platform.
pub(crate) async fn announce_keys(
    conn: &Connection,
    platform: &str,
    keys: Vec<String>,
    from: &KeysFrom,
    how: Announce,
) -> Result<(), KeyError> {
    let keys = input::keys(keys, from.keys_from.as_deref())?;
    let p = publisher(conn).await?;
    for key in &keys {
        match &how {
            Announce::Publish {
                account: None,
                limit: None,
            } => p.publish(platform, key).await?,
            Announce::Publish { account, limit } => {
                p.publish_account(platform, key, account.as_deref(), *limit)
                    .await?
            }
            Announce::Unpublish => p.unpublish(platform, key).await?,
        }
    }
    let verb = match how {
        Announce::Publish { .. } => "published",
        Announce::Unpublish => "unpublished",
    };
    if conn.json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, verb: keys.len(), "platform": platform })
        );
    } else {
        println!("{verb} {} key(s) on {platform}", keys.len());
    }
    Ok(())
}

/// What `keyman publish` and `keyman unpublish` announce for each key.
pub(crate) enum Announce {
    /// PUBLISH, in `account` (ext) with `limit` calls per window (ext).
    Publish {
        account: Option<String>,
        limit: Option<u64>,
    },
    /// UNPUBLISH.
    Unpublish,
}

/// `keyman forget`: every key off every platform, then an ACK, so that the
/// orchestrator has handled (and will save) the removals when it returns.
pub(crate) async fn forget(conn: &Connection, args: &[String]) -> Result<(), KeyError> {
    let mut keys = Vec::new();
    for arg in args {
        if arg == "-" {
            for line in std::io::stdin().lines() {
                let line = line.map_err(|e| {
                    KeyError::InvalidArgument(format!("could not read keys from stdin: {e}"))
                })?;
                let key = line.trim();
                if !key.is_empty() {
                    keys.push(key.to_string());
                }
            }
        } else {
            keys.push(arg.clone());
        }
    }
    let p = publisher(conn).await?;
    let platforms = p.platforms().await?;
    for key in &keys {
        for platform in &platforms {
            p.unpublish(platform, key).await?;
        }
    }
    p.ping().await?;
    let shown: Vec<String> = keys.iter().map(|k| Masked(k).to_string()).collect();
    if conn.json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, "forgotten": shown, "platforms": platforms.len() })
        );
    } else {
        println!(
            "forgot {} key(s) on all {} platform(s): {}",
            keys.len(),
            platforms.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// `keyman platforms`.
pub(crate) async fn platforms(conn: &Connection) -> Result<(), KeyError> {
    let list = publisher(conn).await?.platforms().await?;
    print_list(conn, &list, false);
    Ok(())
}

/// `keyman keys`: the fresh and expired keys of a platform.
pub(crate) async fn keys(conn: &Connection, platform: &str) -> Result<(), KeyError> {
    let list = publisher(conn).await?.keys(platform).await?;
    print_list(conn, &list, true);
    Ok(())
}

/// `keyman invalid`: the invalid keys of a platform.
pub(crate) async fn invalid(conn: &Connection, platform: &str) -> Result<(), KeyError> {
    let list = publisher(conn).await?.invalid_keys(platform).await?;
    print_list(conn, &list, true);
    Ok(())
}

/// `keyman status`, once or (`watch`) every second.
pub(crate) async fn status(conn: &Connection, watch: bool) -> Result<(), KeyError> {
    let publisher = publisher(conn).await?;
    if watch {
        return watch::watch(publisher, conn.json).await;
    }
    let status = publisher.status().await?;
    if conn.json {
        println!("{}", watch::json_status(&status));
    } else {
        print!("{}", watch::table(&status));
    }
    Ok(())
}

/// `keyman ping`: waits for the orchestrator's ACK and says how long it took.
pub(crate) async fn ping(conn: &Connection) -> Result<(), KeyError> {
    let start = std::time::Instant::now();
    publisher(conn).await?.ping().await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if conn.json {
        println!("{}", serde_json::json!({ "ok": true, "ms": ms }));
    } else {
        println!("orchestrator answered in {ms:.1} ms");
    }
    Ok(())
}

/// `keyman shutdown`.
pub(crate) async fn shutdown(conn: &Connection) -> Result<(), KeyError> {
    let p = publisher(conn).await?;
    p.shutdown().await?;
    if conn.json {
        println!("{}", serde_json::json!({ "ok": true }));
    } else {
        println!("shutdown sent");
    }
    Ok(())
}
