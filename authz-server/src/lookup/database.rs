//! One configured database — a SQLite or PostgreSQL connection pool — and the one way its rows
//! come back: every column rendered as text, SQL NULL left out.

use std::str::FromStr;
use std::time::Duration;

use rules::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};

/// How long a pool waits for a free connection. The lookup's own timeout is usually shorter and
/// wins; this bounds the `keys` CLI and the connectivity check at start.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database could not be opened or queried.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL names neither `sqlite://` nor `postgres://`.
    #[error("unsupported database URL scheme in `{0}`: expected sqlite://PATH or postgres://...")]
    UnsupportedScheme(String),
    /// The driver refused the URL, the connection or the query (its message, which already
    /// includes the database's own).
    #[error("{0}")]
    Sql(String),
    /// A result column has a type this server does not render as text.
    #[error(
        "column `{column}` has type {type_name}, which is not read as text; cast it in the query (e.g. CAST({column} AS TEXT))"
    )]
    UnsupportedColumn {
        /// The column's name.
        column: String,
        /// The database's name for its type.
        type_name: String,
    },
}

/// Whether opening a SQLite file may create it. Serving never creates a database (a typo in a
/// path must not silently become an empty key table); only `keys init` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The database must already exist.
    Existing,
    /// Create the SQLite file when missing.
    Create,
}

/// A pool over one database. Cloning shares the pool.
#[derive(Debug, Clone)]
pub enum Database {
    /// `sqlite://path`, built in.
    Sqlite(SqlitePool),
    /// `postgres://user@host:port/db` (or `postgresql://`).
    Postgres(PgPool),
}

impl Database {
    /// Builds a pool of up to `pool_size` connections. No connection is made yet: the pool
    /// connects on first use and reconnects after failures, so a database that is down at start
    /// can come back later. Call [`Database::ping`] to find out now.
    pub fn open(url: &str, pool_size: u32, mode: OpenMode) -> Result<Self, DatabaseError> {
        let pool_size = pool_size.max(1);
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(mode == OpenMode::Create)
                // How long a connection waits on a writer's lock (the `keys` CLI) before giving
                // up. Requests never wait this long: the lookup's own timeout answers them first.
                .busy_timeout(ACQUIRE_TIMEOUT);
            let pool = SqlitePoolOptions::new()
                .max_connections(pool_size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options);
            Ok(Self::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(pool_size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options);
            Ok(Self::Postgres(pool))
        } else {
            Err(DatabaseError::UnsupportedScheme(redact(url)))
        }
    }

    /// Opens one connection outside the pool and closes it, to report a bad database at start
    /// with the driver's own reason (the pool would only say it timed out).
    pub async fn ping(&self) -> Result<(), DatabaseError> {
        use sqlx::{ConnectOptions as _, Connection as _};
        match self {
            Self::Sqlite(pool) => pool.connect_options().connect().await?.close().await?,
            Self::Postgres(pool) => pool.connect_options().connect().await?.close().await?,
        }
        Ok(())
    }

    /// The first row of `sql` with `params` bound as text to `$1`, `$2`, ..., or `None`.
    pub async fn first_row(
        &self,
        sql: &str,
        params: &[String],
    ) -> Result<Option<Row>, DatabaseError> {
        match self {
            Self::Sqlite(pool) => bound(sql, params)
                .fetch_optional(pool)
                .await?
                .map(|row| sqlite_row(&row))
                .transpose(),
            Self::Postgres(pool) => bound(sql, params)
                .fetch_optional(pool)
                .await?
                .map(|row| pg_row(&row))
                .transpose(),
        }
    }

    /// Every row of `sql` (for the `keys` CLI, which lists a table).
    pub async fn rows(&self, sql: &str, params: &[String]) -> Result<Vec<Row>, DatabaseError> {
        match self {
            Self::Sqlite(pool) => bound(sql, params)
                .fetch_all(pool)
                .await?
                .iter()
                .map(sqlite_row)
                .collect(),
            Self::Postgres(pool) => bound(sql, params)
                .fetch_all(pool)
                .await?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[String]) -> Result<u64, DatabaseError> {
        match self {
            Self::Sqlite(pool) => Ok(bound(sql, params).execute(pool).await?.rows_affected()),
            Self::Postgres(pool) => Ok(bound(sql, params).execute(pool).await?.rows_affected()),
        }
    }

    /// Closes every connection (the `keys` CLI, before exiting).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

fn sqlite_row(row: &SqliteRow) -> Result<Row, DatabaseError> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            continue;
        }
        // The value's own storage class, not the declared column type: SQLite is dynamically typed.
        let type_name = raw.type_info().name().to_owned();
        let text = match type_name.as_str() {
            "INTEGER" => row.try_get_unchecked::<i64, _>(i)?.to_string(),
            "REAL" => row.try_get_unchecked::<f64, _>(i)?.to_string(),
            "TEXT" => row.try_get_unchecked::<String, _>(i)?,
            "BLOB" => match String::from_utf8(row.try_get_unchecked::<Vec<u8>, _>(i)?) {
                Ok(text) => text,
                Err(_) => return Err(unsupported(column.name(), "BLOB (not UTF-8)")),
            },
            other => return Err(unsupported(column.name(), other)),
        };
        out.insert(column.name().to_owned(), text);
    }
    Ok(out)
}

fn pg_row(row: &PgRow) -> Result<Row, DatabaseError> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            continue;
        }
        let text = match column.type_info().name() {
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" | "UNKNOWN" => {
                row.try_get_unchecked::<String, _>(i)?
            }
            "INT2" => row.try_get::<i16, _>(i)?.to_string(),
            "INT4" => row.try_get::<i32, _>(i)?.to_string(),
            "INT8" => row.try_get::<i64, _>(i)?.to_string(),
            "FLOAT4" => row.try_get::<f32, _>(i)?.to_string(),
            "FLOAT8" => row.try_get::<f64, _>(i)?.to_string(),
            "BOOL" => row.try_get::<bool, _>(i)?.to_string(),
            other => return Err(unsupported(column.name(), other)),
        };
        out.insert(column.name().to_owned(), text);
    }
    Ok(out)
}

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error.to_string())
    }
}

fn unsupported(column: &str, type_name: &str) -> DatabaseError {
    DatabaseError::UnsupportedColumn {
        column: column.to_owned(),
        type_name: type_name.to_owned(),
    }
}

/// `sql` with `params` bound as text to `$1`, `$2`, ...: values travel beside the SQL, never in it.
fn bound<'q, DB>(
    sql: &'q str,
    params: &'q [String],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    params
        .iter()
        .fold(sqlx::query(sql), |query, param| query.bind(param.as_str()))
}
