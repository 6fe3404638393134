//! Event storage: embedded SQLite (a file, or in memory when `database` is
//! empty) or PostgreSQL (`postgres://` URL), one schema created by numbered
//! migrations, and a background writer that batches, retries and counts
//! failures so the pipeline never waits on the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::analyticssink::events::Event;
use crate::metrics::{METRICS, labels};

/// Schema migrations, applied in order once each: (version, SQLite, PostgreSQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "CREATE TABLE rtai_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_key TEXT NOT NULL UNIQUE,
        element TEXT NOT NULL,
        stream TEXT NOT NULL,
        type TEXT NOT NULL,
        start_ns BIGINT NOT NULL,
        end_ns BIGINT,
        wall_ms BIGINT NOT NULL,
        confidence DOUBLE PRECISION,
        clip_worthy_score DOUBLE PRECISION NOT NULL,
        label TEXT,
        track_id BIGINT,
        text TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX rtai_events_type_wall ON rtai_events (type, wall_ms);
    CREATE INDEX rtai_events_stream_wall ON rtai_events (stream, wall_ms);",
    "CREATE TABLE rtai_events (
        id BIGSERIAL PRIMARY KEY,
        event_key TEXT NOT NULL UNIQUE,
        element TEXT NOT NULL,
        stream TEXT NOT NULL,
        type TEXT NOT NULL,
        start_ns BIGINT NOT NULL,
        end_ns BIGINT,
        wall_ms BIGINT NOT NULL,
        confidence DOUBLE PRECISION,
        clip_worthy_score DOUBLE PRECISION NOT NULL,
        label TEXT,
        track_id BIGINT,
        text TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX rtai_events_type_wall ON rtai_events (type, wall_ms);
    CREATE INDEX rtai_events_stream_wall ON rtai_events (stream, wall_ms);",
)];

const COLUMNS: &str = "id, event_key, element, stream, type, start_ns, end_ns, wall_ms, confidence, clip_worthy_score, label, track_id, text, data";

/// Filters and paging of `/api/events`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub stream: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: u32,
    pub offset: u64,
    /// Newest first.
    pub descending: bool,
}

#[derive(Debug, Serialize)]
pub struct EventsPage {
    pub events: Vec<serde_json::Value>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    pub next_offset: Option<u64>,
}

// One instance behind an Arc per store: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Postgres {
        url: String,
        client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    },
}

#[derive(Clone)]
pub struct Store(Arc<Backend>);

/// PostgreSQL for its URLs and for libpq `key=value` strings (which tokio-postgres
/// takes as they are); a SQLite path otherwise.
fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://")
        || database.starts_with("postgresql://")
        || rtai_core::secrets::is_pg_conninfo(database)
}

/// The filter as SQL conditions with numbered placeholders (`?1` / `$1`) and their values.
fn conditions(f: &EventFilter, pg: bool) -> (String, Vec<SqlValue>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut push = |clause: &str, v: SqlValue| {
        values.push(v);
        let n = values.len();
        clauses.push(clause.replace('#', &if pg { format!("${n}") } else { format!("?{n}") }));
    };
    if let Some(k) = &f.kind {
        push("type = #", SqlValue::Text(k.clone()));
    }
    if let Some(s) = &f.stream {
        push("stream = #", SqlValue::Text(s.clone()));
    }
    if let Some(s) = f.since_ms {
        push("wall_ms >= #", SqlValue::Int(s));
    }
    if let Some(u) = f.until_ms {
        push("wall_ms <= #", SqlValue::Int(u));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

/// `err` and its causes: tokio-postgres' own text ("error connecting to server",
/// "invalid connection string") leaves out why. The causes name options, never
/// their values.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

#[derive(Debug, Clone)]
enum SqlValue {
    Text(String),
    Int(i64),
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            SqlValue::Text(s) => s.to_sql(),
            SqlValue::Int(i) => i.to_sql(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn row_json(
    id: i64,
    key: String,
    element: String,
    stream: String,
    kind: String,
    start: i64,
    end: Option<i64>,
    wall_ms: i64,
    confidence: Option<f64>,
    score: f64,
    label: Option<String>,
    track_id: Option<i64>,
    text: Option<String>,
    data: String,
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "key": key, "element": element, "stream": stream, "type": kind,
        "start": start, "end": end, "wall_ms": wall_ms, "confidence": confidence,
        "clip_worthy_score": score, "label": label, "track_id": track_id, "text": text,
        "data": serde_json::from_str::<serde_json::Value>(&data).unwrap_or(serde_json::Value::Null),
    })
}

impl Store {
    /// Opens (and migrates) `database`: empty for in-memory SQLite, a path for
    /// a SQLite file, or a `postgres://` URL.
    pub async fn open(database: &str) -> Result<Self, String> {
        if is_postgres(database) {
            let store = Store(Arc::new(Backend::Postgres {
                url: database.to_string(),
                client: tokio::sync::Mutex::new(None),
            }));
            store.migrate_pg().await?;
            return Ok(store);
        }
        let path = database.to_string();
        let conn = tokio::task::spawn_blocking(move || -> Result<rusqlite::Connection, String> {
            let mut conn = if path.is_empty() { rusqlite::Connection::open_in_memory() } else { rusqlite::Connection::open(&path) }
                .map_err(|e| format!("cannot open SQLite database '{}': {e}", rtai_core::secrets::redact(&path)))?;
            conn.busy_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())?;
            if !path.is_empty() {
                // WAL lets readers (the API, other processes) read while the writer writes.
                let _ = conn.pragma_update(None, "journal_mode", "WAL");
            }
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            tx.execute_batch("CREATE TABLE IF NOT EXISTS rtai_schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
                .map_err(|e| e.to_string())?;
            for (version, sqlite, _) in MIGRATIONS {
                let done: bool = tx
                    .query_row("SELECT EXISTS(SELECT 1 FROM rtai_schema_migrations WHERE version = ?1)", [version], |r| r.get(0))
                    .map_err(|e| e.to_string())?;
                if !done {
                    tx.execute_batch(sqlite).map_err(|e| format!("migration {version}: {e}"))?;
                    tx.execute("INSERT INTO rtai_schema_migrations (version, applied_ms) VALUES (?1, ?2)", (version, now_ms()))
                        .map_err(|e| e.to_string())?;
                }
            }
            tx.commit().map_err(|e| e.to_string())?;
            Ok(conn)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(Store(Arc::new(Backend::Sqlite(Arc::new(
            std::sync::Mutex::new(conn),
        )))))
    }

    pub fn backend_name(&self) -> &'static str {
        match &*self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgresql",
        }
    }

    /// The PostgreSQL client, (re)connecting when there is none or it closed.
    async fn pg<'a>(
        url: &str,
        slot: &'a tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    ) -> Result<tokio::sync::MutexGuard<'a, Option<tokio_postgres::Client>>, String> {
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "connecting to PostgreSQL timed out".to_string())?
            .map_err(|e| format!("cannot connect to PostgreSQL: {}", with_causes(&e)))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *guard = Some(client);
        }
        Ok(guard)
    }

    async fn migrate_pg(&self) -> Result<(), String> {
        let Backend::Postgres { url, client } = &*self.0 else {
            unreachable!()
        };
        let mut guard = Self::pg(url, client).await?;
        let client = guard.as_mut().expect("connected");
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        // One migrator at a time, even across processes.
        tx.batch_execute("SELECT pg_advisory_xact_lock(74657261); CREATE TABLE IF NOT EXISTS rtai_schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
            .await
            .map_err(|e| e.to_string())?;
        for (version, _, pg) in MIGRATIONS {
            let done: bool = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM rtai_schema_migrations WHERE version = $1)",
                    &[version],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if !done {
                tx.batch_execute(pg)
                    .await
                    .map_err(|e| format!("migration {version}: {e}"))?;
                tx.execute(
                    "INSERT INTO rtai_schema_migrations (version, applied_ms) VALUES ($1, $2)",
                    &[version, &now_ms()],
                )
                .await
                .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().await.map_err(|e| e.to_string())
    }

    /// Writes `events` in one transaction; events already stored (same key) are skipped.
    pub async fn insert(&self, events: &[Event]) -> Result<u64, String> {
        match &*self.0 {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let events = events.to_vec();
                tokio::task::spawn_blocking(move || -> Result<u64, String> {
                    let mut conn = conn.lock().unwrap();
                    let tx = conn.transaction().map_err(|e| e.to_string())?;
                    let mut n = 0;
                    {
                        let mut stmt = tx
                            .prepare_cached(
                                "INSERT INTO rtai_events (event_key, element, stream, type, start_ns, end_ns, wall_ms, confidence, clip_worthy_score, label, track_id, text, data)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT (event_key) DO NOTHING",
                            )
                            .map_err(|e| e.to_string())?;
                        for e in &events {
                            n += stmt
                                .execute(rusqlite::params![
                                    e.key,
                                    e.element,
                                    e.stream,
                                    e.kind.as_str(),
                                    e.start as i64,
                                    e.end.map(|v| v as i64),
                                    e.wall_ms,
                                    e.confidence,
                                    e.clip_worthy_score,
                                    e.label,
                                    e.track_id,
                                    e.text,
                                    e.data.to_string()
                                ])
                                .map_err(|e| e.to_string())? as u64;
                        }
                    }
                    tx.commit().map_err(|e| e.to_string())?;
                    Ok(n)
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Backend::Postgres { url, client } => {
                let mut guard = Self::pg(url, client).await?;
                let result = async {
                    let client = guard.as_mut().expect("connected");
                    let tx = client.transaction().await?;
                    let stmt = tx
                        .prepare(
                            "INSERT INTO rtai_events (event_key, element, stream, type, start_ns, end_ns, wall_ms, confidence, clip_worthy_score, label, track_id, text, data)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (event_key) DO NOTHING",
                        )
                        .await?;
                    let mut n = 0;
                    for e in events {
                        let start = e.start as i64;
                        let end = e.end.map(|v| v as i64);
                        let data = e.data.to_string();
                        n += tx
                            .execute(
                                &stmt,
                                &[
                                    &e.key,
                                    &e.element,
                                    &e.stream,
                                    &e.kind.as_str(),
                                    &start,
                                    &end,
                                    &e.wall_ms,
                                    &e.confidence,
                                    &e.clip_worthy_score,
                                    &e.label,
                                    &e.track_id,
                                    &e.text,
                                    &data,
                                ],
                            )
                            .await?;
                    }
                    tx.commit().await?;
                    Ok::<u64, tokio_postgres::Error>(n)
                }
                .await;
                result.map_err(|e| {
                    // A broken connection is replaced on the next attempt.
                    if guard.as_ref().is_some_and(|c| c.is_closed()) {
                        *guard = None;
                    }
                    format!("PostgreSQL write failed: {e}")
                })
            }
        }
    }

    /// One page of stored events.
    pub async fn query(&self, f: &EventFilter) -> Result<EventsPage, String> {
        let order = if f.descending { "DESC" } else { "ASC" };
        let (events, total) = match &*self.0 {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let f = f.clone();
                tokio::task::spawn_blocking(move || -> Result<(Vec<serde_json::Value>, u64), String> {
                    let conn = conn.lock().unwrap();
                    let (cond, values) = conditions(&f, false);
                    let params = rusqlite::params_from_iter(values.iter());
                    let total: i64 = conn
                        .query_row(&format!("SELECT COUNT(*) FROM rtai_events{cond}"), params, |r| r.get(0))
                        .map_err(|e| e.to_string())?;
                    let sql = format!("SELECT {COLUMNS} FROM rtai_events{cond} ORDER BY id {order} LIMIT {} OFFSET {}", f.limit, f.offset);
                    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                            Ok(row_json(
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                                r.get(7)?,
                                r.get(8)?,
                                r.get(9)?,
                                r.get(10)?,
                                r.get(11)?,
                                r.get(12)?,
                                r.get(13)?,
                            ))
                        })
                        .map_err(|e| e.to_string())?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())?;
                    Ok((rows, total as u64))
                })
                .await
                .map_err(|e| e.to_string())??
            }
            Backend::Postgres { url, client } => {
                let guard = Self::pg(url, client).await?;
                let client = guard.as_ref().expect("connected");
                let (cond, values) = conditions(f, true);
                let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = values
                    .into_iter()
                    .map(|v| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                        match v {
                            SqlValue::Text(s) => Box::new(s),
                            SqlValue::Int(i) => Box::new(i),
                        }
                    })
                    .collect();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|b| b.as_ref() as _).collect();
                let total: i64 = client
                    .query_one(&format!("SELECT COUNT(*) FROM rtai_events{cond}"), &refs)
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                let sql = format!(
                    "SELECT {COLUMNS} FROM rtai_events{cond} ORDER BY id {order} LIMIT {} OFFSET {}",
                    f.limit, f.offset
                );
                let rows = client.query(&sql, &refs).await.map_err(|e| e.to_string())?;
                let events = rows
                    .iter()
                    .map(|r| {
                        row_json(
                            r.get(0),
                            r.get(1),
                            r.get(2),
                            r.get(3),
                            r.get(4),
                            r.get(5),
                            r.get(6),
                            r.get(7),
                            r.get(8),
                            r.get(9),
                            r.get(10),
                            r.get(11),
                            r.get(12),
                            r.get(13),
                        )
                    })
                    .collect();
                (events, total as u64)
            }
        };
        let end = f.offset + events.len() as u64;
        Ok(EventsPage {
            next_offset: (end < total).then_some(end),
            events,
            total,
            limit: f.limit,
            offset: f.offset,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Counters of the background writer, shared with the element's `stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
    pub queued: AtomicU64,
}

/// Largest backoff between retries of a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Writes what arrives on `rx` in batches of up to `batch_size`; a failed batch
/// is retried (with backoff up to [`MAX_BACKOFF`]) until it is written, and
/// given up (counted as dropped) only once the sink closed the channel and
/// `give_up_after` retries failed.
pub async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<Event>,
    batch_size: usize,
    obj: gst::glib::WeakRef<gst::Element>,
    element: String,
    stats: Arc<WriterStats>,
) {
    let backend = store.backend_name();
    let el = labels(&[("element", &element), ("backend", backend)]);
    let depth = labels(&[("element", &element)]);
    let give_up_after = 3;
    let mut batch = Vec::with_capacity(batch_size);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut attempt = 0u32;
        loop {
            match store.insert(&batch).await {
                Ok(n) => {
                    stats.written.fetch_add(n, Ordering::Relaxed);
                    METRICS.rows_written.get_or_create(&el).inc_by(n);
                    break;
                }
                Err(err) => {
                    attempt += 1;
                    // Logged before it is counted: who sees the count finds the warning.
                    crate::analyticssink::warn(
                        &obj,
                        &element,
                        &format!(
                            "write of {} events failed (attempt {attempt}): {err}",
                            batch.len()
                        ),
                    );
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    METRICS.write_failures.get_or_create(&el).inc();
                    if rx.is_closed() && attempt >= give_up_after {
                        stats
                            .dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        METRICS
                            .dropped
                            .get_or_create(&labels(&[("element", &element), ("reason", "storage")]))
                            .inc_by(batch.len() as u64);
                        break;
                    }
                    let backoff = Duration::from_millis(100u64 << attempt.min(5)).min(MAX_BACKOFF);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        stats
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        METRICS
            .queue_depth
            .get_or_create(&depth)
            .set(stats.queued.load(Ordering::Relaxed) as i64);
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_becomes_numbered_conditions() {
        let f = EventFilter {
            kind: Some("speech".into()),
            stream: Some("sink_1".into()),
            since_ms: Some(5),
            until_ms: None,
            limit: 10,
            offset: 0,
            descending: false,
        };
        assert_eq!(
            conditions(&f, false).0,
            " WHERE type = ?1 AND stream = ?2 AND wall_ms >= ?3"
        );
        assert_eq!(
            conditions(&f, true).0,
            " WHERE type = $1 AND stream = $2 AND wall_ms >= $3"
        );
        assert_eq!(conditions(&EventFilter::default(), true).0, "");
    }

    #[test]
    fn urls_pick_the_backend() {
        assert!(is_postgres("postgres://u@localhost/db"));
        assert!(is_postgres("postgresql://localhost"));
        assert!(is_postgres("host=localhost dbname=events password=x"));
        assert!(!is_postgres("/tmp/x.sqlite"));
        assert!(!is_postgres(""));
    }
}
