//! Live publishing of every event to a Redis stream (`XADD … MAXLEN ~ N`), in
//! the background: failures are counted and the connection re-made; the
//! pipeline never waits for Redis. Problems go to a [`Reporter`], not to the element.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::{Labels, METRICS};
use crate::report::Reporter;

#[derive(Debug, Default)]
pub struct RedisStats {
    pub published: AtomicU64,
    pub failures: AtomicU64,
}

/// `(type, json)` of each event arrives on `rx`; `base` are the owner's metric labels.
pub async fn run_redis(
    url: String,
    key: String,
    max_len: u32,
    mut rx: mpsc::Receiver<(&'static str, Arc<str>)>,
    reporter: Arc<dyn Reporter>,
    base: Labels,
    stats: Arc<RedisStats>,
) {
    let el = base;
    let warn = |msg: &str| reporter.warning(msg);
    // Redis' errors name the problem, never the URL's password.
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => Some(c),
        Err(err) => {
            warn(&format!(
                "invalid Redis URL {}: {err}",
                rtai_core::secrets::redact(&url)
            ));
            None
        }
    };
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff_until: Option<tokio::time::Instant> = None;
    while let Some((kind, json)) = rx.recv().await {
        let mut ok = false;
        for _attempt in 0..2 {
            let Some(client) = &client else { break };
            if conn.is_none() {
                if backoff_until.is_some_and(|t| tokio::time::Instant::now() < t) {
                    break;
                }
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    client.get_multiplexed_async_connection(),
                )
                .await
                {
                    Ok(Ok(c)) => conn = Some(c),
                    failed => {
                        // At most one warning per backoff period.
                        match failed {
                            Ok(Err(err)) => warn(&format!("cannot connect to Redis: {err}")),
                            _ => warn("connecting to Redis timed out"),
                        }
                        backoff_until =
                            Some(tokio::time::Instant::now() + Duration::from_millis(500));
                        break;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            let reply: redis::RedisResult<String> = redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg("type")
                .arg(kind)
                .arg("event")
                .arg(json.as_ref())
                .query_async(c)
                .await;
            match reply {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(err) => {
                    warn(&format!("Redis XADD failed: {err}"));
                    conn = None;
                }
            }
        }
        if ok {
            stats.published.fetch_add(1, Ordering::Relaxed);
            METRICS.redis_published.get_or_create(&el).inc();
        } else {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            METRICS.redis_failures.get_or_create(&el).inc();
        }
    }
}
