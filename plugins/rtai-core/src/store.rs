//! The SQL store shared by the plugins that keep rows (`analyticssink`'s
//! events, live delivery's sessions and per-second stream metrics): embedded
//! SQLite (a file, or in memory for an empty name) or PostgreSQL (a
//! `postgres://` URL or a libpq `key=value` string), one connection layer.
//!
//! - [`Db::open`] connects; [`Db::migrate`] applies a [`Schema`]: numbered
//!   [`Migration`]s, each once, recorded in the schema's own migrations table
//!   (so several schemas share one database without their version numbers
//!   colliding), one migrator at a time (PostgreSQL advisory lock).
//! - Generic statements: SQL with PostgreSQL-style `$1 … $n` placeholders and
//!   [`SqlValue`] parameters, run by [`Db::execute`] (one transaction) and
//!   [`Db::query`] on either backend. `$n` becomes `?n` for SQLite.
//! - Code that needs more (prepared statements, typed columns) takes the
//!   backend itself with [`Db::backend`].
//! - Failures are [`WriteError::Permanent`] (the database refused the data:
//!   PostgreSQL SQLSTATE classes 22/23/42, SQLite constraint/too big/mismatch)
//!   or [`WriteError::Transient`] (connection lost, busy: retry).
//!
//! Extending: a backend option (e.g. TimescaleDB hypertables for the
//! per-second tables) belongs in [`Migration`] / [`Schema`] (a PostgreSQL-only
//! step) so every schema can use it; the tables stay plain SQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use rusqlite;
pub use tokio_postgres;

/// One schema change: the same step for both backends.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A set of tables with its own migration history.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Table recording the applied versions (e.g. `rtai_schema_migrations`).
    pub migrations_table: &'static str,
    /// PostgreSQL advisory lock key held while migrating.
    pub lock_key: i64,
    pub migrations: &'static [Migration],
}

/// PostgreSQL for its URLs and for libpq `key=value` strings (which tokio-postgres
/// takes as they are); a SQLite path otherwise.
pub fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://")
        || database.starts_with("postgresql://")
        || crate::secrets::is_pg_conninfo(database)
}

/// Milliseconds since the Unix epoch.
/// The start error of an element whose `database` (shown with its password
/// redacted) did not open: `what` names the store ("analytics", "delivery").
pub fn open_error(what: &str, err: impl std::fmt::Display, database: &str) -> gst::ErrorMessage {
    gst::error_msg!(
        gst::ResourceError::OpenReadWrite,
        ("Cannot open the {} database: {}", what, err),
        ["database property: {}", crate::secrets::redact(database)]
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `err` and its causes: tokio-postgres' own text ("error connecting to server",
/// "invalid connection string") leaves out why. The causes name options, never
/// their values.
pub fn with_causes(err: &dyn std::error::Error) -> String {
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

/// Why a write failed, and so what the writer does about it.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// The database refused the data (retrying cannot help): drop it.
    Permanent(String),
    /// The database could not be reached or was busy: retry.
    Transient(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Permanent(m) | Self::Transient(m) => f.write_str(m),
        }
    }
}

/// SQLSTATE classes of errors in the data itself: 22 data exception (NUL in
/// text, invalid JSON, out of range), 23 integrity constraint, 42 syntax
/// error or access rule violation.
pub fn is_permanent_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "42"))
}

pub fn pg_error(e: &tokio_postgres::Error) -> WriteError {
    match (e.code(), e.as_db_error()) {
        (Some(code), Some(db)) if is_permanent_sqlstate(code.code()) => {
            WriteError::Permanent(format!("SQLSTATE {}: {}", code.code(), db.message()))
        }
        _ => WriteError::Transient(format!("PostgreSQL write failed: {}", with_causes(e))),
    }
}

pub fn sqlite_error(e: rusqlite::Error) -> WriteError {
    use rusqlite::ErrorCode;
    let permanent = match &e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
        ),
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    };
    if permanent {
        WriteError::Permanent(format!("SQLite: {e}"))
    } else {
        WriteError::Transient(format!("SQLite write failed: {e}"))
    }
}

/// A parameter or a column value of the generic statements.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl SqlValue {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            SqlValue::Real(f) => Some(*f as i64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SqlValue::Int(i) => Some(*i as f64),
            SqlValue::Real(f) => Some(*f),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<u64> for SqlValue {
    fn from(v: u64) -> Self {
        SqlValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Owned(Value::Null),
            SqlValue::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            SqlValue::Real(f) => ToSqlOutput::Owned(Value::Real(*f)),
            SqlValue::Text(s) => {
                ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(s.as_bytes()))
            }
        })
    }
}

impl tokio_postgres::types::ToSql for SqlValue {
    /// Written as the column's type asks: integers as INT2/4/8 or FLOAT,
    /// reals as FLOAT4/8, text as text (a value out of the column's range is
    /// an error, which PostgreSQL would report as class 22).
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::{IsNull, Type};
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            SqlValue::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            SqlValue::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// SQL with `$n` placeholders as SQLite writes them (`?n`).
pub fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// One statement of [`Db::execute`].
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// The PostgreSQL side: a URL and one client, reconnected when it closed.
pub struct Pg {
    url: String,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

/// The client of [`Pg::client`]: `Some` while connected.
pub type PgGuard<'a> = tokio::sync::MutexGuard<'a, Option<tokio_postgres::Client>>;

impl Pg {
    /// The client, (re)connecting when there is none or it closed.
    pub async fn client(&self) -> Result<PgGuard<'_>, String> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls),
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

    /// Drops a broken client so the next call reconnects.
    pub fn forget_if_closed(guard: &mut PgGuard<'_>) {
        if guard.as_ref().is_some_and(|c| c.is_closed()) {
            **guard = None;
        }
    }
}

/// The connection of a [`Db`].
// One instance behind an Arc per database: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Pg),
}

/// An open database; cheap to clone (one connection shared).
#[derive(Clone)]
pub struct Db(Arc<Backend>);

impl Db {
    /// Opens `database`: empty for in-memory SQLite, a path for a SQLite file,
    /// or a `postgres://` URL (connected at once, so a wrong URL fails here).
    pub async fn open(database: &str) -> Result<Self, String> {
        if is_postgres(database) {
            let pg = Pg {
                url: database.to_string(),
                client: tokio::sync::Mutex::new(None),
            };
            drop(pg.client().await?);
            return Ok(Db(Arc::new(Backend::Postgres(pg))));
        }
        let path = database.to_string();
        let conn = tokio::task::spawn_blocking(move || -> Result<rusqlite::Connection, String> {
            let conn = if path.is_empty() {
                rusqlite::Connection::open_in_memory()
            } else {
                rusqlite::Connection::open(&path)
            }
            .map_err(|e| {
                format!(
                    "cannot open SQLite database '{}': {e}",
                    crate::secrets::redact(&path)
                )
            })?;
            conn.busy_timeout(Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            if !path.is_empty() {
                // WAL lets readers (the API, other processes) read while the writer writes.
                let _ = conn.pragma_update(None, "journal_mode", "WAL");
            }
            Ok(conn)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(Db(Arc::new(Backend::Sqlite(Arc::new(Mutex::new(conn))))))
    }

    /// Opens `database` and applies `schema`.
    pub async fn open_with(database: &str, schema: &Schema) -> Result<Self, String> {
        let db = Self::open(database).await?;
        db.migrate(schema).await?;
        Ok(db)
    }

    pub fn backend(&self) -> &Backend {
        &self.0
    }

    pub fn backend_name(&self) -> &'static str {
        match &*self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(&*self.0, Backend::Postgres(_))
    }

    /// Applies the migrations of `schema` not applied yet, in one transaction.
    pub async fn migrate(&self, schema: &Schema) -> Result<(), String> {
        let table = schema.migrations_table;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)"
        );
        let exists = format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE version = $1)");
        let record = format!("INSERT INTO {table} (version, applied_ms) VALUES ($1, $2)");
        match &*self.0 {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let migrations = schema.migrations;
                tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let mut conn = conn.lock().unwrap();
                    let tx = conn.transaction().map_err(|e| e.to_string())?;
                    tx.execute_batch(&create).map_err(|e| e.to_string())?;
                    for m in migrations {
                        let done: bool = tx
                            .query_row(&sqlite_placeholders(&exists), [m.version], |r| r.get(0))
                            .map_err(|e| e.to_string())?;
                        if !done {
                            tx.execute_batch(m.sqlite)
                                .map_err(|e| format!("migration {}: {e}", m.version))?;
                            tx.execute(&sqlite_placeholders(&record), (m.version, now_ms()))
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    tx.commit().map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Backend::Postgres(pg) => {
                let mut guard = pg.client().await?;
                let client = guard.as_mut().expect("connected");
                let tx = client.transaction().await.map_err(|e| e.to_string())?;
                // One migrator at a time, even across processes.
                tx.batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock({}); {create}",
                    schema.lock_key
                ))
                .await
                .map_err(|e| e.to_string())?;
                for m in schema.migrations {
                    let done: bool = tx
                        .query_one(&exists, &[&m.version])
                        .await
                        .map_err(|e| e.to_string())?
                        .get(0);
                    if !done {
                        tx.batch_execute(m.postgres)
                            .await
                            .map_err(|e| format!("migration {}: {e}", m.version))?;
                        tx.execute(&record, &[&m.version, &now_ms()])
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                tx.commit().await.map_err(|e| e.to_string())
            }
        }
    }

    /// Runs `stmts` in one transaction; the number of rows they changed.
    pub async fn execute(&self, stmts: Vec<Stmt>) -> Result<u64, WriteError> {
        match &*self.0 {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || -> Result<u64, WriteError> {
                    let mut conn = conn.lock().unwrap();
                    let tx = conn
                        .transaction()
                        .map_err(|e| WriteError::Transient(format!("SQLite: {e}")))?;
                    let mut n = 0;
                    for s in &stmts {
                        let mut stmt = tx
                            .prepare_cached(&sqlite_placeholders(&s.sql))
                            .map_err(sqlite_error)?;
                        n += stmt
                            .execute(rusqlite::params_from_iter(s.params.iter()))
                            .map_err(sqlite_error)? as u64;
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
                    let mut n = 0;
                    for s in &stmts {
                        let stmt = tx.prepare(&s.sql).await?;
                        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                            s.params.iter().map(|p| p as _).collect();
                        n += tx.execute(&stmt, &refs).await?;
                    }
                    tx.commit().await?;
                    Ok::<u64, tokio_postgres::Error>(n)
                }
                .await;
                result.map_err(|e| {
                    Pg::forget_if_closed(&mut guard);
                    pg_error(&e)
                })
            }
        }
    }

    /// The rows of one query, each column as a [`SqlValue`] (integers, reals,
    /// text; other PostgreSQL types must be cast in the SQL).
    pub async fn query(
        &self,
        sql: &str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, String> {
        match &*self.0 {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let sql = sqlite_placeholders(sql);
                tokio::task::spawn_blocking(move || -> Result<Vec<Vec<SqlValue>>, String> {
                    use rusqlite::types::ValueRef;
                    let conn = conn.lock().unwrap();
                    let mut stmt = conn.prepare_cached(&sql).map_err(|e| e.to_string())?;
                    let n = stmt.column_count();
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                            (0..n)
                                .map(|i| {
                                    Ok(match r.get_ref(i)? {
                                        ValueRef::Null => SqlValue::Null,
                                        ValueRef::Integer(v) => SqlValue::Int(v),
                                        ValueRef::Real(v) => SqlValue::Real(v),
                                        ValueRef::Text(t) => {
                                            SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                                        }
                                        ValueRef::Blob(b) => {
                                            SqlValue::Text(String::from_utf8_lossy(b).into_owned())
                                        }
                                    })
                                })
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .map_err(|e| e.to_string())?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())?;
                    Ok(rows)
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Backend::Postgres(pg) => {
                use tokio_postgres::types::Type;
                let mut guard = pg.client().await?;
                let client = guard.as_ref().expect("connected");
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as _).collect();
                let rows = match client.query(sql, &refs).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        Pg::forget_if_closed(&mut guard);
                        return Err(with_causes(&e));
                    }
                };
                rows.iter()
                    .map(|r| {
                        r.columns()
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let v = match *c.type_() {
                                    Type::INT8 => {
                                        r.try_get::<_, Option<i64>>(i)?.map(SqlValue::Int)
                                    }
                                    Type::INT4 => r
                                        .try_get::<_, Option<i32>>(i)?
                                        .map(|v| SqlValue::Int(v.into())),
                                    Type::INT2 => r
                                        .try_get::<_, Option<i16>>(i)?
                                        .map(|v| SqlValue::Int(v.into())),
                                    Type::BOOL => r
                                        .try_get::<_, Option<bool>>(i)?
                                        .map(|v| SqlValue::Int(v.into())),
                                    Type::FLOAT8 => {
                                        r.try_get::<_, Option<f64>>(i)?.map(SqlValue::Real)
                                    }
                                    Type::FLOAT4 => r
                                        .try_get::<_, Option<f32>>(i)?
                                        .map(|v| SqlValue::Real(v.into())),
                                    _ => r.try_get::<_, Option<String>>(i)?.map(SqlValue::Text),
                                };
                                Ok(v.unwrap_or(SqlValue::Null))
                            })
                            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| with_causes(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert!(is_postgres("postgres://u@localhost/db"));
        assert!(is_postgres("postgresql://localhost"));
        assert!(is_postgres("host=localhost dbname=events password=x"));
        assert!(!is_postgres("/tmp/x.sqlite"));
        assert!(!is_postgres(""));
    }

    #[test]
    fn sqlstate_classes_split_permanent_from_transient() {
        for (code, permanent) in [
            ("22021", true),  // NUL in text ("invalid byte sequence")
            ("22P02", true),  // invalid text representation
            ("22P05", true),  // \u0000 in JSONB
            ("23505", true),  // unique violation
            ("42P01", true),  // undefined table
            ("08006", false), // connection failure
            ("57P01", false), // admin shutdown
            ("53300", false), // too many connections
            ("40001", false), // serialization failure
            ("", false),
            ("2", false),
        ] {
            assert_eq!(is_permanent_sqlstate(code), permanent, "{code}");
        }
    }

    #[test]
    fn placeholders_become_sqlites() {
        assert_eq!(
            sqlite_placeholders("SELECT a FROM t WHERE b = $1 AND c > $12"),
            "SELECT a FROM t WHERE b = ?1 AND c > ?12"
        );
        assert_eq!(sqlite_placeholders("SELECT '$'"), "SELECT '$'");
    }

    const SCHEMA_A: Schema = Schema {
        migrations_table: "test_a_migrations",
        lock_key: 1,
        migrations: &[Migration {
            version: 1,
            sqlite: "CREATE TABLE a (k TEXT PRIMARY KEY, n BIGINT, x DOUBLE PRECISION)",
            postgres: "CREATE TABLE a (k TEXT PRIMARY KEY, n BIGINT, x DOUBLE PRECISION)",
        }],
    };
    const SCHEMA_B: Schema = Schema {
        migrations_table: "test_b_migrations",
        lock_key: 2,
        migrations: &[Migration {
            version: 1,
            sqlite: "CREATE TABLE b (k TEXT)",
            postgres: "CREATE TABLE b (k TEXT)",
        }],
    };

    #[test]
    fn schemas_migrate_apart_and_generic_statements_round_trip() {
        let dir = std::env::temp_dir().join(format!("rtai-core-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let path = path.to_str().unwrap();
        crate::runtime::runtime().block_on(async {
            let db = Db::open(path).await.unwrap();
            // Both have a version 1: each is applied, in its own history.
            db.migrate(&SCHEMA_A).await.unwrap();
            db.migrate(&SCHEMA_B).await.unwrap();
            db.migrate(&SCHEMA_A).await.unwrap();
            let n = db
                .execute(vec![
                    Stmt::new(
                        "INSERT INTO a (k, n, x) VALUES ($1, $2, $3)",
                        vec!["one".into(), 5i64.into(), 0.5.into()],
                    ),
                    Stmt::new(
                        "INSERT INTO a (k, n, x) VALUES ($1, $2, $3)",
                        vec!["two".into(), SqlValue::Null, 1.5.into()],
                    ),
                    Stmt::new("INSERT INTO b (k) VALUES ($1)", vec!["b".into()]),
                ])
                .await
                .unwrap();
            assert_eq!(n, 3);
            // A duplicate key is the data's fault: permanent, and nothing of the
            // transaction stays.
            let err = db
                .execute(vec![
                    Stmt::new("INSERT INTO b (k) VALUES ($1)", vec!["c".into()]),
                    Stmt::new(
                        "INSERT INTO a (k, n, x) VALUES ($1, $2, $3)",
                        vec!["one".into(), 1i64.into(), 1.0.into()],
                    ),
                ])
                .await
                .unwrap_err();
            assert!(matches!(err, WriteError::Permanent(_)), "{err:?}");
            let rows = db
                .query(
                    "SELECT k, n, x FROM a WHERE x >= $1 ORDER BY k",
                    vec![0.0.into()],
                )
                .await
                .unwrap();
            assert_eq!(
                rows,
                vec![
                    vec!["one".into(), SqlValue::Int(5), SqlValue::Real(0.5)],
                    vec!["two".into(), SqlValue::Null, SqlValue::Real(1.5)],
                ]
            );
            let b = db.query("SELECT COUNT(*) FROM b", vec![]).await.unwrap();
            assert_eq!(b, vec![vec![SqlValue::Int(1)]]);
        });
        // Reopened: the data and the migration history are there.
        crate::runtime::runtime().block_on(async {
            let db = Db::open_with(path, &SCHEMA_A).await.unwrap();
            let rows = db.query("SELECT COUNT(*) FROM a", vec![]).await.unwrap();
            assert_eq!(rows, vec![vec![SqlValue::Int(2)]]);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
