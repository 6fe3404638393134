//! Delivery's tables in the shared store (`rtai_core::store`): streams,
//! sessions, rendition switches and one row of metrics per stream and
//! second; the background writer; the history queries of
//! `/api/streams/{stream}/metrics`.
//!
//! The same SQL runs on SQLite and PostgreSQL. `rtai_delivery_stream_metrics`
//! is an append-only time series (a TimescaleDB hypertable candidate).

use std::time::Duration;

use rtai_core::store::{Db, Migration, Schema, SqlValue, Stmt, WriteError, now_ms};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::CAT;
use super::state::{Change, Status};

const TABLES: &str = "CREATE TABLE rtai_delivery_streams (
    stream TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    status TEXT NOT NULL,
    error TEXT,
    publisher TEXT,
    renditions TEXT NOT NULL,
    PRIMARY KEY (stream, started_ms)
);
CREATE TABLE rtai_delivery_sessions (
    id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    remote TEXT,
    joined_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    left_ms BIGINT,
    rendition TEXT,
    switches BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    stalls BIGINT NOT NULL
);
CREATE INDEX rtai_delivery_sessions_stream ON rtai_delivery_sessions (stream, joined_ms);
CREATE TABLE rtai_delivery_switches (
    stream TEXT NOT NULL,
    session TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    from_rendition TEXT,
    to_rendition TEXT NOT NULL
);
CREATE INDEX rtai_delivery_switches_stream ON rtai_delivery_switches (stream, at_ms);
CREATE TABLE rtai_delivery_stream_metrics (
    stream TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    viewers BIGINT NOT NULL,
    ingress_bps DOUBLE PRECISION NOT NULL,
    egress_bps DOUBLE PRECISION NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    stalls BIGINT NOT NULL,
    renditions TEXT NOT NULL
);
CREATE INDEX rtai_delivery_stream_metrics_stream ON rtai_delivery_stream_metrics (stream, at_ms);";

/// Delivery's schema: its own migration history, apart from analyticssink's.
pub const SCHEMA: Schema = Schema {
    migrations_table: "rtai_delivery_schema_migrations",
    lock_key: 74657262,
    migrations: &[Migration {
        version: 1,
        sqlite: TABLES,
        postgres: TABLES,
    }],
};

/// The store, opened (and migrated) on first use by whoever needs it first.
pub struct StoreSlot {
    url: String,
    db: OnceCell<Result<Db, String>>,
}

impl StoreSlot {
    pub fn new(url: String) -> Self {
        Self {
            url,
            db: OnceCell::new(),
        }
    }

    pub async fn get(&self) -> Result<&Db, String> {
        self.db
            .get_or_init(|| async {
                let r = Db::open_with(&self.url, &SCHEMA).await;
                if let Err(e) = &r {
                    gst::warning!(CAT, "delivery store unavailable: {e}");
                }
                r
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }
}

pub enum Write {
    Change(Change),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<Result<(), String>>),
}

const BATCH: usize = 512;
const RETRIES: u32 = 5;

/// Writes what arrives on `rx` in batches (one transaction each); a
/// transient failure is retried with backoff ([`RETRIES`] times), a batch
/// the database refuses is written row by row and the refused rows dropped.
pub async fn run_writer(store: std::sync::Arc<StoreSlot>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(w) = next.take() {
            match w {
                Write::Change(c) => batch.extend(statements(&c)),
                Write::Flush(tx) => flushes.push(tx),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let result = match store.get().await {
            Ok(db) => write(db, std::mem::take(&mut batch)).await,
            Err(e) => {
                batch.clear();
                Err(e)
            }
        };
        for tx in flushes.drain(..) {
            let _ = tx.send(result.clone());
        }
    }
}

async fn write(db: &Db, stmts: Vec<Stmt>) -> Result<(), String> {
    if stmts.is_empty() {
        return Ok(());
    }
    let mut attempt = 0;
    loop {
        match db.execute(stmts.clone()).await {
            Ok(_) => return Ok(()),
            Err(WriteError::Permanent(e)) => {
                gst::warning!(
                    CAT,
                    "delivery store refused a batch ({e}): writing it row by row"
                );
                for s in stmts {
                    if let Err(e) = db.execute(vec![s]).await {
                        gst::warning!(CAT, "delivery store dropped a row: {e}");
                    }
                }
                return Ok(());
            }
            Err(WriteError::Transient(e)) => {
                attempt += 1;
                gst::warning!(CAT, "delivery store write failed (attempt {attempt}): {e}");
                if attempt >= RETRIES {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
}

fn statements(c: &Change) -> Vec<Stmt> {
    match c {
        Change::StreamStarted {
            stream,
            started_ms,
            publisher,
            renditions,
        } => vec![Stmt::new(
            "INSERT INTO rtai_delivery_streams (stream, started_ms, status, publisher, renditions) \
             VALUES ($1, $2, 'active', $3, $4) ON CONFLICT (stream, started_ms) DO NOTHING",
            vec![
                stream.as_str().into(),
                (*started_ms).into(),
                publisher.clone().into(),
                serde_json::to_string(renditions).unwrap_or_default().into(),
            ],
        )],
        Change::StreamEnded {
            stream,
            started_ms,
            ended_ms,
            status,
        } => vec![Stmt::new(
            "UPDATE rtai_delivery_streams SET ended_ms = $1, status = $2, error = $3 \
             WHERE stream = $4 AND started_ms = $5",
            vec![
                (*ended_ms).into(),
                status.as_str().into(),
                match status {
                    Status::Error(e) => SqlValue::Text(e.clone()),
                    _ => SqlValue::Null,
                },
                stream.as_str().into(),
                (*started_ms).into(),
            ],
        )],
        Change::Session {
            stream,
            session: s,
            left_ms,
            ..
        } => vec![Stmt::new(
            "INSERT INTO rtai_delivery_sessions \
             (id, stream, remote, joined_ms, last_ms, left_ms, rendition, switches, bytes, requests, stalls) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET last_ms = excluded.last_ms, left_ms = excluded.left_ms, \
             rendition = excluded.rendition, switches = excluded.switches, bytes = excluded.bytes, \
             requests = excluded.requests, stalls = excluded.stalls",
            vec![
                s.id.as_str().into(),
                stream.as_str().into(),
                s.remote.map(|a| a.to_string()).into(),
                s.joined_ms.into(),
                s.last_request_ms.into(),
                (*left_ms).into(),
                s.rendition.clone().into(),
                s.switches.into(),
                s.bytes.into(),
                s.requests.into(),
                s.stalls.into(),
            ],
        )],
        Change::Switch {
            stream,
            session,
            at_ms,
            from,
            to,
        } => vec![Stmt::new(
            "INSERT INTO rtai_delivery_switches (stream, session, at_ms, from_rendition, to_rendition) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                stream.as_str().into(),
                session.as_str().into(),
                (*at_ms).into(),
                from.clone().into(),
                to.as_str().into(),
            ],
        )],
        Change::Second {
            stream,
            at_ms,
            viewers,
            ingress_bps,
            egress_bps,
            requests,
            errors,
            stalls,
            renditions,
        } => vec![Stmt::new(
            "INSERT INTO rtai_delivery_stream_metrics \
             (stream, at_ms, viewers, ingress_bps, egress_bps, requests, errors, stalls, renditions) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                stream.as_str().into(),
                (*at_ms).into(),
                (*viewers).into(),
                (*ingress_bps).into(),
                (*egress_bps).into(),
                (*requests).into(),
                (*errors).into(),
                (*stalls).into(),
                serde_json::to_string(renditions).unwrap_or_default().into(),
            ],
        )],
    }
}

/// What `/api/streams/{stream}/metrics` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub since_ms: i64,
    pub until_ms: i64,
    pub limit: u32,
}

fn int(v: &SqlValue) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn text(v: &SqlValue) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The stored history of `stream` between the query's bounds: per-second
/// points (the newest `limit`, oldest first), sessions and switches.
pub async fn history(db: &Db, stream: &str, q: &HistoryQuery) -> Result<Value, String> {
    let args = || -> Vec<SqlValue> { vec![stream.into(), q.since_ms.into(), q.until_ms.into()] };
    let points = db
        .query(
            &format!(
                "SELECT at_ms, viewers, ingress_bps, egress_bps, requests, errors, stalls, renditions \
                 FROM rtai_delivery_stream_metrics WHERE stream = $1 AND at_ms >= $2 AND at_ms <= $3 \
                 ORDER BY at_ms DESC LIMIT {}",
                q.limit
            ),
            args(),
        )
        .await?;
    let mut points: Vec<Value> = points
        .iter()
        .map(|r| {
            json!({
                "t": int(&r[0]),
                "viewers": int(&r[1]),
                "ingress_bps": r[2].as_f64().unwrap_or(0.0),
                "egress_bps": r[3].as_f64().unwrap_or(0.0),
                "requests": int(&r[4]),
                "errors": int(&r[5]),
                "stalls": int(&r[6]),
                "renditions": r[7].as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()).unwrap_or(json!({})),
            })
        })
        .collect();
    points.reverse();
    let sessions = db
        .query(
            "SELECT id, remote, joined_ms, last_ms, left_ms, rendition, switches, bytes, requests, stalls \
             FROM rtai_delivery_sessions WHERE stream = $1 AND (left_ms IS NULL OR left_ms >= $2) \
             AND joined_ms <= $3 ORDER BY joined_ms DESC LIMIT 1000",
            args(),
        )
        .await?;
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|r| {
            json!({
                "id": text(&r[0]),
                "remote": text(&r[1]),
                "joined_ms": int(&r[2]),
                "last_ms": int(&r[3]),
                "left_ms": r[4].as_i64(),
                "rendition": text(&r[5]),
                "switches": int(&r[6]),
                "bytes": int(&r[7]),
                "requests": int(&r[8]),
                "stalls": int(&r[9]),
            })
        })
        .collect();
    let switches = db
        .query(
            "SELECT at_ms, session, from_rendition, to_rendition FROM rtai_delivery_switches \
             WHERE stream = $1 AND at_ms >= $2 AND at_ms <= $3 ORDER BY at_ms DESC LIMIT 1000",
            args(),
        )
        .await?;
    let switches: Vec<Value> = switches
        .iter()
        .map(|r| {
            json!({
                "t": int(&r[0]),
                "session": text(&r[1]),
                "from": text(&r[2]),
                "to": text(&r[3]),
            })
        })
        .collect();
    let totals = db
        .query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(stalls), 0) AS BIGINT), CAST(COALESCE(SUM(switches), 0) AS BIGINT) \
             FROM rtai_delivery_sessions WHERE stream = $1 AND (left_ms IS NULL OR left_ms >= $2) AND joined_ms <= $3",
            args(),
        )
        .await?;
    let t = totals.first().cloned().unwrap_or_default();
    Ok(json!({
        "stream": stream,
        "since_ms": q.since_ms,
        "until_ms": q.until_ms,
        "generated_ms": now_ms(),
        "points": points,
        "sessions": sessions,
        "switches": switches,
        "totals": {
            "sessions": t.first().map(int).unwrap_or(0),
            "stalls": t.get(1).map(int).unwrap_or(0),
            "switches": t.get(2).map(int).unwrap_or(0),
        },
    }))
}
