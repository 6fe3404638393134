//! Event storage: embedded SQLite (a file, or in memory when `database` is
//! empty) or PostgreSQL (`postgres://` URL), one schema created by numbered
//! migrations, and a background writer that batches, retries and counts
//! failures so the pipeline never waits on the database.
//!
//! Failures are of two kinds ([`WriteError`]): the database refusing an event
//! (PostgreSQL SQLSTATE classes 22 data exception, 23 integrity constraint,
//! 42 syntax or access rule; SQLite constraint, too big, mismatch) drops that
//! event alone, counted and warned about once; anything else (connection
//! lost, busy, timeout) is retried with backoff while the bounded queue in
//! front of the writer takes new events or drops and counts them.
//!
//! The connection layer (SQLite or PostgreSQL, migrations, error classes) is
//! the shared `rtai_core::store`; this module holds the events' schema, their
//! SQL and the writer. Depends on the event data ([`crate::event`]), the
//! metrics and the [`Reporter`] interface only, not on the element.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use rtai_core::store::WriteError;
use rtai_core::store::{
    Backend, Db, Migration, Pg, Schema, SqlValue, Stmt, pg_error, sqlite_error,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::event::{Event, EventKind, rfc3339_ms};
use crate::metrics::{Labels, METRICS, with_label};
use crate::report::Reporter;

/// The events' tables: migrations applied in order once each, recorded in
/// `rtai_schema_migrations` (the table's name from before the store was shared).
const SCHEMA: Schema = Schema {
    migrations_table: "rtai_schema_migrations",
    lock_key: 74657261,
    migrations: &[
        Migration {
            version: 1,
            sqlite: "CREATE TABLE rtai_events (
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
            postgres: "CREATE TABLE rtai_events (
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
        },
        // Event schema 2 (docs/event-schema.json): schema version, source id,
        // pipeline, the UTC event time and where it came from; snake_case types;
        // `data` as JSONB in PostgreSQL. `event_key` holds the event's UUID.
        Migration {
            version: 2,
            sqlite: "ALTER TABLE rtai_events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE rtai_events ADD COLUMN source_id TEXT;
    ALTER TABLE rtai_events ADD COLUMN pipeline TEXT;
    ALTER TABLE rtai_events ADD COLUMN event_time_ms BIGINT;
    ALTER TABLE rtai_events ADD COLUMN time_source TEXT;
    UPDATE rtai_events SET type = replace(type, '-', '_');
    CREATE INDEX rtai_events_source_time ON rtai_events (source_id, event_time_ms);",
            postgres:
                "ALTER TABLE rtai_events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE rtai_events ADD COLUMN source_id TEXT;
    ALTER TABLE rtai_events ADD COLUMN pipeline TEXT;
    ALTER TABLE rtai_events ADD COLUMN event_time_ms BIGINT;
    ALTER TABLE rtai_events ADD COLUMN time_source TEXT;
    UPDATE rtai_events SET type = replace(type, '-', '_');
    ALTER TABLE rtai_events ALTER COLUMN data TYPE JSONB USING data::jsonb;
    CREATE INDEX rtai_events_source_time ON rtai_events (source_id, event_time_ms);",
        },
        // TimescaleDB where the server has it: `rtai_events` becomes a hypertable
        // partitioned on `wall_ms` (ms since the epoch, one-day chunks). A hypertable's
        // unique keys must hold its time column, so the keys become (id, wall_ms) and
        // (event_key, wall_ms), the latter on plain tables too: inserts say
        // `ON CONFLICT (event_key, wall_ms)` on every backend (a retried event keeps its
        // `created_ms`), and every query is the same with or without TimescaleDB. An
        // extension that is installed but cannot be created (not in
        // `shared_preload_libraries`) leaves plain tables, with a NOTICE.
        Migration {
            version: 3,
            sqlite: "CREATE UNIQUE INDEX rtai_events_key_wall ON rtai_events (event_key, wall_ms);",
            postgres:
                "CREATE UNIQUE INDEX rtai_events_key_wall ON rtai_events (event_key, wall_ms);
    DO $rtai$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS timescaledb;
                ALTER TABLE rtai_events DROP CONSTRAINT rtai_events_pkey;
                ALTER TABLE rtai_events DROP CONSTRAINT rtai_events_event_key_key;
                ALTER TABLE rtai_events ADD PRIMARY KEY (id, wall_ms);
                PERFORM create_hypertable('rtai_events', 'wall_ms',
                    chunk_time_interval => 86400000::bigint, migrate_data => true);
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'TimescaleDB not usable (%), rtai_events stays a plain table', SQLERRM;
            END;
        END IF;
    END
    $rtai$;",
        },
    ],
};

/// What a query reads, in [`row_json`]'s order (`data` is cast to text in PostgreSQL).
const COLUMNS: &str = "event_key, element, stream, type, start_ns, end_ns, wall_ms, confidence, clip_worthy_score, label, track_id, text, schema_version, source_id, pipeline, event_time_ms, time_source";
const INSERT: &str = "INSERT INTO rtai_events (event_key, element, stream, type, start_ns, end_ns, wall_ms, confidence, clip_worthy_score, label, track_id, text, schema_version, source_id, pipeline, event_time_ms, time_source, data)";
/// The time `since`/`until` filter on: when the event happened (rows of schema 1: when it was made).
const EVENT_TIME: &str = "COALESCE(event_time_ms, wall_ms)";

/// Filters and paging of `/api/events`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<EventKind>,
    pub stream: Option<String>,
    pub source_id: Option<String>,
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

/// Ids of one recorded clip matched against the stored clip events (more are ignored).
const MAX_CLIP_IDS: usize = 256;

/// What the background writer does, in the order sent.
// Events went through the queue unboxed before; the rare clip update is the small one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Write {
    /// Store an event.
    Insert(Event),
    /// A clip is in storage: add its URL to the stored clip events it recorded.
    ClipRecorded(Box<ClipRecorded>),
}

impl From<Event> for Write {
    fn from(e: Event) -> Self {
        Write::Insert(e)
    }
}

/// cliprecorder's `rtai-clip-recorded` as stored with the clip events (docs/cliprecorder.md).
#[derive(Debug, Clone)]
pub struct ClipRecorded {
    /// Matched against the clip events' `data.source` (the scored events' ids).
    pub sources: Vec<String>,
    /// Matched against the clip events' `event_id`.
    pub event_ids: Vec<String>,
    /// Merged into their `data`: `url`, `play_url`, `recorded` (null members left out).
    pub patch: serde_json::Value,
}

impl ClipRecorded {
    /// With `patch`'s null members removed (at any depth), so both backends' merges agree
    /// (SQLite's `json_patch` deletes a member patched with null, JSONB `||` keeps it).
    pub fn new(sources: Vec<String>, event_ids: Vec<String>, mut patch: serde_json::Value) -> Self {
        fn strip(v: &mut serde_json::Value) {
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, m| !m.is_null());
                o.values_mut().for_each(strip);
            }
        }
        strip(&mut patch);
        Self {
            sources,
            event_ids,
            patch,
        }
    }
}

#[derive(Clone)]
pub struct Store(Db);

/// The filter as SQL conditions with numbered placeholders (`?1` / `$1`) and their values.
fn conditions(f: &EventFilter, pg: bool) -> (String, Vec<SqlValue>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut push = |clause: &str, v: SqlValue| {
        values.push(v);
        let n = values.len();
        clauses.push(clause.replace('#', &if pg { format!("${n}") } else { format!("?{n}") }));
    };
    if let Some(k) = f.kind {
        push("type = #", SqlValue::Text(k.as_str().to_string()));
    }
    if let Some(s) = &f.stream {
        push("stream = #", SqlValue::Text(s.clone()));
    }
    if let Some(s) = &f.source_id {
        push("source_id = #", SqlValue::Text(s.clone()));
    }
    if let Some(s) = f.since_ms {
        push(&format!("{EVENT_TIME} >= #"), SqlValue::Int(s));
    }
    if let Some(u) = f.until_ms {
        push(&format!("{EVENT_TIME} <= #"), SqlValue::Int(u));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

/// One stored row, read in [`COLUMNS`]' order plus `data` (as text).
struct Row {
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
    schema_version: i64,
    source_id: Option<String>,
    pipeline: Option<String>,
    event_time_ms: Option<i64>,
    time_source: Option<String>,
    data: String,
}

/// A row as the event JSON of docs/event-schema.json; rows stored before
/// schema 2 keep `schema_version` 1 and get their missing fields derived
/// (event time: when the event was made; source id: the stream).
fn row_json(r: Row) -> serde_json::Value {
    let event_time_ms = r.event_time_ms.unwrap_or(r.wall_ms);
    serde_json::json!({
        "schema_version": r.schema_version,
        "event_id": r.key,
        "type": r.kind,
        "source_id": r.source_id.unwrap_or_else(|| r.stream.clone()),
        "pipeline": r.pipeline.unwrap_or_default(),
        "element": r.element,
        "stream": r.stream,
        "event_time": rfc3339_ms(event_time_ms),
        "event_time_ms": event_time_ms,
        "time_source": r.time_source.unwrap_or_else(|| "wall".into()),
        "start_ns": r.start,
        "end_ns": r.end,
        "created_ms": r.wall_ms,
        "confidence": r.confidence,
        "clip_worthy_score": r.score,
        "label": r.label,
        "track_id": r.track_id,
        "text": r.text,
        "data": serde_json::from_str::<serde_json::Value>(&r.data).unwrap_or(serde_json::Value::Null),
    })
}

impl Store {
    /// Opens (and migrates) `database`: empty for in-memory SQLite, a path for
    /// a SQLite file, or a `postgres://` URL.
    pub async fn open(database: &str) -> Result<Self, String> {
        Ok(Store(Db::open_with(database, &SCHEMA).await?))
    }

    pub fn backend_name(&self) -> &'static str {
        self.0.backend_name()
    }

    /// Writes `events` in one transaction; events already stored (same id) are skipped.
    pub async fn insert(&self, events: &[Event]) -> Result<u64, WriteError> {
        match self.0.backend() {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let events = events.to_vec();
                tokio::task::spawn_blocking(move || -> Result<u64, WriteError> {
                    let mut conn = conn.lock().unwrap();
                    let tx = conn
                        .transaction()
                        .map_err(|e| WriteError::Transient(format!("SQLite: {e}")))?;
                    let mut n = 0;
                    {
                        let mut stmt = tx
                            .prepare_cached(&format!(
                                "{INSERT} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) ON CONFLICT (event_key, wall_ms) DO NOTHING"
                            ))
                            .map_err(sqlite_error)?;
                        for e in &events {
                            n += stmt
                                .execute(rusqlite::params![
                                    e.event_id,
                                    e.element,
                                    e.stream,
                                    e.kind.as_str(),
                                    e.start_ns as i64,
                                    e.end_ns.map(|v| v as i64),
                                    e.created_ms,
                                    e.confidence,
                                    e.clip_worthy_score,
                                    e.label,
                                    e.track_id,
                                    e.text,
                                    e.schema_version,
                                    e.source_id,
                                    e.pipeline,
                                    e.event_time_ms,
                                    e.time_source.as_str(),
                                    e.data.to_string()
                                ])
                                .map_err(sqlite_error)? as u64;
                        }
                    }
                    tx.commit().map_err(sqlite_error)?;
                    Ok(n)
                })
                .await
                .map_err(|e| WriteError::Transient(e.to_string()))?
            }
            Backend::Postgres(pg) => {
                let mut guard = pg.client().await.map_err(WriteError::Transient)?;
                let result = async {
                    let client = guard.as_mut().expect("connected");
                    let tx = client.transaction().await?;
                    // `data` is sent as text and cast: JSONB checks it.
                    let stmt = tx
                        .prepare(&format!(
                            "{INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::text::jsonb) ON CONFLICT (event_key, wall_ms) DO NOTHING"
                        ))
                        .await?;
                    let mut n = 0;
                    for e in events {
                        let start = e.start_ns as i64;
                        let end = e.end_ns.map(|v| v as i64);
                        let version = e.schema_version as i32;
                        let data = e.data.to_string();
                        n += tx
                            .execute(
                                &stmt,
                                &[
                                    &e.event_id,
                                    &e.element,
                                    &e.stream,
                                    &e.kind.as_str(),
                                    &start,
                                    &end,
                                    &e.created_ms,
                                    &e.confidence,
                                    &e.clip_worthy_score,
                                    &e.label,
                                    &e.track_id,
                                    &e.text,
                                    &version,
                                    &e.source_id,
                                    &e.pipeline,
                                    &e.event_time_ms,
                                    &e.time_source.as_str(),
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
                    Pg::forget_if_closed(&mut guard);
                    pg_error(&e)
                })
            }
        }
    }

    /// Adds a recorded clip's `data.url`, `data.play_url` and `data.recorded`
    /// ([`ClipRecorded::patch`]) to the stored clip events it recorded: those whose
    /// `data.source` is one of its `sources` or whose `event_id` is one of its
    /// `event_ids`. One statement, the same on both backends but for the JSON merge
    /// (SQLite `json_patch`, PostgreSQL JSONB `||`); the number of rows changed.
    pub async fn clip_recorded(&self, clip: &ClipRecorded) -> Result<u64, WriteError> {
        let take = |v: &[String]| -> Vec<SqlValue> {
            v.iter()
                .filter(|s| !s.is_empty())
                .take(MAX_CLIP_IDS)
                .map(|s| SqlValue::Text(s.clone()))
                .collect()
        };
        let (sources, ids) = (take(&clip.sources), take(&clip.event_ids));
        if sources.is_empty() && ids.is_empty() {
            return Ok(0);
        }
        let mut params = vec![SqlValue::Text(clip.patch.to_string())];
        let mut list = |values: Vec<SqlValue>| -> String {
            let start = params.len() + 1;
            let n = values.len();
            params.extend(values);
            (start..start + n)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut matches = Vec::new();
        if !sources.is_empty() {
            matches.push(format!("data ->> 'source' IN ({})", list(sources)));
        }
        if !ids.is_empty() {
            matches.push(format!("event_key IN ({})", list(ids)));
        }
        let merge = if self.0.is_postgres() {
            "data || CAST(CAST($1 AS TEXT) AS JSONB)"
        } else {
            "json_patch(data, $1)"
        };
        let sql = format!(
            "UPDATE rtai_events SET data = {merge} WHERE type = 'clip' AND ({})",
            matches.join(" OR ")
        );
        self.0.execute(vec![Stmt::new(sql, params)]).await
    }

    /// One page of stored events.
    pub async fn query(&self, f: &EventFilter) -> Result<EventsPage, String> {
        let order = if f.descending { "DESC" } else { "ASC" };
        let (events, total) = match self.0.backend() {
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
                    let sql = format!("SELECT {COLUMNS}, data FROM rtai_events{cond} ORDER BY id {order} LIMIT {} OFFSET {}", f.limit, f.offset);
                    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                            Ok(row_json(Row {
                                key: r.get(0)?,
                                element: r.get(1)?,
                                stream: r.get(2)?,
                                kind: r.get(3)?,
                                start: r.get(4)?,
                                end: r.get(5)?,
                                wall_ms: r.get(6)?,
                                confidence: r.get(7)?,
                                score: r.get(8)?,
                                label: r.get(9)?,
                                track_id: r.get(10)?,
                                text: r.get(11)?,
                                schema_version: r.get(12)?,
                                source_id: r.get(13)?,
                                pipeline: r.get(14)?,
                                event_time_ms: r.get(15)?,
                                time_source: r.get(16)?,
                                data: r.get(17)?,
                            }))
                        })
                        .map_err(|e| e.to_string())?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())?;
                    Ok((rows, total as u64))
                })
                .await
                .map_err(|e| e.to_string())??
            }
            Backend::Postgres(pg) => {
                let guard = pg.client().await?;
                let client = guard.as_ref().expect("connected");
                let (cond, values) = conditions(f, true);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    values.iter().map(|v| v as _).collect();
                let total: i64 = client
                    .query_one(&format!("SELECT COUNT(*) FROM rtai_events{cond}"), &refs)
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                let sql = format!(
                    "SELECT {COLUMNS}, data::text FROM rtai_events{cond} ORDER BY id {order} LIMIT {} OFFSET {}",
                    f.limit, f.offset
                );
                let rows = client.query(&sql, &refs).await.map_err(|e| e.to_string())?;
                let events = rows
                    .iter()
                    .map(|r| {
                        row_json(Row {
                            key: r.get(0),
                            element: r.get(1),
                            stream: r.get(2),
                            kind: r.get(3),
                            start: r.get(4),
                            end: r.get(5),
                            wall_ms: r.get(6),
                            confidence: r.get(7),
                            score: r.get(8),
                            label: r.get(9),
                            track_id: r.get(10),
                            text: r.get(11),
                            schema_version: i64::from(r.get::<_, i32>(12)),
                            source_id: r.get(13),
                            pipeline: r.get(14),
                            event_time_ms: r.get(15),
                            time_source: r.get(16),
                            data: r.get(17),
                        })
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

/// Counters of the background writer, shared with the element's `stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    /// Failed write attempts (each is retried).
    pub failures: AtomicU64,
    /// Events given up after the sink stopped with the database still away.
    pub dropped: AtomicU64,
    /// Events the database refused (dropped, each alone).
    pub rejected: AtomicU64,
    pub queued: AtomicU64,
}

/// Largest backoff between retries of a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Retries of a transient failure once the sink closed the queue.
const GIVE_UP_AFTER: u32 = 3;

/// Writes what arrives on `rx` in batches of up to `batch_size`:
/// - a transient failure is retried (with backoff up to [`MAX_BACKOFF`]) until
///   the batch is written, and given up (counted as dropped) only once the
///   sink closed the channel and [`GIVE_UP_AFTER`] retries failed;
/// - a permanent failure writes the batch again one event at a time, and each
///   event the database refuses is dropped and counted as rejected (the first
///   one is a warning, later ones debug messages).
///
/// `base` are the metric labels of the owner (`element`, `pipeline`).
pub async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<Write>,
    batch_size: usize,
    reporter: Arc<dyn Reporter>,
    base: Labels,
    stats: Arc<WriterStats>,
) {
    let backend = store.backend_name();
    let el = with_label(&base, "backend", backend);
    let rejected_labels = with_label(&base, "reason", "rejected");
    let give_up_labels = with_label(&base, "reason", "storage");
    let mut warned_rejection = false;
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    // An update taken while filling a batch: it runs after the batch (the order sent).
    let mut next: Option<Write> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => break,
            },
        };
        let update = match first {
            Write::Insert(e) => {
                batch.push(e);
                while batch.len() < batch_size {
                    match rx.try_recv() {
                        Ok(Write::Insert(e)) => batch.push(e),
                        Ok(w) => {
                            next = Some(w);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                None
            }
            Write::ClipRecorded(c) => Some(c),
        };
        let taken = batch.len() as u64 + u64::from(update.is_some());
        let mut one_by_one = false;
        let mut attempt = 0u32;
        while !batch.is_empty() {
            let n = if one_by_one { 1 } else { batch.len() };
            match store.insert(&batch[..n]).await {
                Ok(w) => {
                    stats.written.fetch_add(w, Ordering::Relaxed);
                    METRICS.rows_written.get_or_create(&el).inc_by(w);
                    batch.drain(..n);
                    attempt = 0;
                }
                Err(WriteError::Permanent(err)) if n > 1 => {
                    reporter.debug(&format!(
                        "write of {n} events refused ({err}): writing them one at a time"
                    ));
                    one_by_one = true;
                }
                Err(WriteError::Permanent(err)) => {
                    let e = batch.remove(0);
                    let msg = format!(
                        "the database rejected event {} ({} on {}), dropped: {err}",
                        e.event_id,
                        e.kind.as_str(),
                        e.source_id
                    );
                    // Logged before it is counted: who sees the count finds the warning.
                    if warned_rejection {
                        reporter.debug(&msg);
                    } else {
                        warned_rejection = true;
                        reporter.warning(&format!(
                            "{msg} (further rejected events are counted in stats 'rejected' and \
                             rtai_analytics_events_dropped_total{{reason=\"rejected\"}}, not warned about)"
                        ));
                    }
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    METRICS.dropped.get_or_create(&rejected_labels).inc();
                    attempt = 0;
                }
                Err(WriteError::Transient(err)) => {
                    attempt += 1;
                    reporter.warning(&format!(
                        "write of {n} events failed (attempt {attempt}): {err}"
                    ));
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    METRICS.write_failures.get_or_create(&el).inc();
                    if rx.is_closed() && attempt >= GIVE_UP_AFTER {
                        let lost = batch.len() as u64;
                        stats.dropped.fetch_add(lost, Ordering::Relaxed);
                        METRICS.dropped.get_or_create(&give_up_labels).inc_by(lost);
                        batch.clear();
                        break;
                    }
                    let backoff = Duration::from_millis(100u64 << attempt.min(5)).min(MAX_BACKOFF);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        if let Some(clip) = update {
            write_clip_url(&store, &clip, &rx, reporter.as_ref(), &stats, &el).await;
        }
        stats.queued.fetch_sub(taken, Ordering::Relaxed);
        METRICS
            .queue_depth
            .get_or_create(&base)
            .set(stats.queued.load(Ordering::Relaxed) as i64);
    }
}

/// Stores a recorded clip's URL with its clip events: retried like a batch while the
/// database is away, given up once the sink stopped and [`GIVE_UP_AFTER`] retries failed.
async fn write_clip_url(
    store: &Store,
    clip: &ClipRecorded,
    rx: &mpsc::Receiver<Write>,
    reporter: &dyn Reporter,
    stats: &WriterStats,
    el: &Labels,
) {
    let url = clip.patch["url"].as_str().unwrap_or_default();
    let mut attempt = 0u32;
    loop {
        match store.clip_recorded(clip).await {
            Ok(0) => {
                reporter.debug(&format!(
                    "no stored clip event for the recorded clip {url} (sources {:?})",
                    clip.sources
                ));
                return;
            }
            Ok(n) => {
                reporter.debug(&format!("{url} stored with {n} clip events"));
                return;
            }
            Err(WriteError::Permanent(err)) => {
                reporter.warning(&format!(
                    "the database refused the recorded clip's url {url}: {err}"
                ));
                return;
            }
            Err(WriteError::Transient(err)) => {
                attempt += 1;
                reporter.warning(&format!(
                    "storing the recorded clip's url failed (attempt {attempt}): {err}"
                ));
                stats.failures.fetch_add(1, Ordering::Relaxed);
                METRICS.write_failures.get_or_create(el).inc();
                if rx.is_closed() && attempt >= GIVE_UP_AFTER {
                    return;
                }
                let backoff = Duration::from_millis(100u64 << attempt.min(5)).min(MAX_BACKOFF);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_becomes_numbered_conditions() {
        let f = EventFilter {
            kind: Some(EventKind::Speech),
            stream: Some("sink_1".into()),
            source_id: None,
            since_ms: Some(5),
            until_ms: None,
            limit: 10,
            offset: 0,
            descending: false,
        };
        assert_eq!(
            conditions(&f, false).0,
            " WHERE type = ?1 AND stream = ?2 AND COALESCE(event_time_ms, wall_ms) >= ?3"
        );
        assert_eq!(
            conditions(&f, true).0,
            " WHERE type = $1 AND stream = $2 AND COALESCE(event_time_ms, wall_ms) >= $3"
        );
        assert_eq!(conditions(&EventFilter::default(), true).0, "");
    }
}
