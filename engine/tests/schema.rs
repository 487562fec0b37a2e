//! The metadata schema is written twice, by hand: once per dialect (`engine/migrations/
//! sqlite` and `engine/migrations/postgres`). Every query is shared between the two, so
//! the twins must describe the same tables. This test migrates a fresh database of each
//! kind through the engine's own start, reads the resulting schema back from the database
//! catalogues and compares them: tables, columns (coarse type, NOT NULL, whether a default
//! exists), primary keys, unique constraints, indexes (name, uniqueness, columns) and
//! foreign keys.
//!
//! The apalis queue is not compared: its tables come from apalis's own migrations and
//! differ by design. They never meet ours anyway (on SQLite the queue is a separate file,
//! on PostgreSQL it lives outside the `sluice` schema), and sqlx's `_sqlx_migrations` is
//! left out on both sides.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sluice_engine::{Config, Engine};
use sqlx::{Connection, Row};

/// A column as both dialects can describe it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    /// `integer`, `real` or `text`; anything else is kept as the catalogue spells it.
    kind: String,
    not_null: bool,
    has_default: bool,
}

/// A foreign key: local columns, referenced table and columns, action on delete.
type ForeignKey = (Vec<String>, String, Vec<String>, String);

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    /// In key order.
    primary_key: Vec<String>,
    /// Unique constraints other than the primary key.
    unique: BTreeSet<Vec<String>>,
    /// Indexes created by name: name -> (unique, columns in order).
    indexes: BTreeMap<String, (bool, Vec<String>)>,
    foreign_keys: BTreeSet<ForeignKey>,
}

type Schema = BTreeMap<String, Table>;

/// Not part of the metadata schema (see the module comment).
fn ignored(table: &str) -> bool {
    table == "_sqlx_migrations" || table.starts_with("sqlite_")
}

/// The coarse type of a column: the dialects spell the same storage differently
/// (`INTEGER` / `BIGINT`, `REAL` / `DOUBLE PRECISION`).
fn coarse_type(declared: &str) -> String {
    let t = declared.trim().to_ascii_lowercase();
    match t.as_str() {
        "integer" | "int" | "bigint" | "smallint" | "int2" | "int4" | "int8" => "integer".into(),
        "real" | "double precision" | "double" | "float" | "float4" | "float8" => "real".into(),
        "text" | "character varying" | "varchar" => "text".into(),
        _ => t,
    }
}

async fn sqlite_schema(path: &std::path::Path) -> Schema {
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .filter(|t: &String| !ignored(t))
        .collect();
    let mut schema = Schema::new();
    for name in tables {
        let mut table = Table::default();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for r in
            sqlx::query("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info($1)")
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .unwrap()
        {
            let column: String = r.get(0);
            let pk_pos: i64 = r.get(4);
            if pk_pos > 0 {
                pk.push((pk_pos, column.clone()));
            }
            table.columns.insert(
                column,
                Column {
                    kind: coarse_type(&r.get::<String, _>(1)),
                    // SQLite lets a non-integer primary key hold NULL unless told otherwise;
                    // PostgreSQL never does. The declarations are the same: compare them so.
                    not_null: r.get::<i64, _>(2) != 0 || pk_pos > 0,
                    has_default: r.get::<Option<String>, _>(3).is_some(),
                },
            );
        }
        pk.sort();
        table.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        for r in sqlx::query("SELECT name, \"unique\", origin FROM pragma_index_list($1)")
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let index: String = r.get(0);
            let unique = r.get::<i64, _>(1) != 0;
            let origin: String = r.get(2);
            let columns: Vec<String> =
                sqlx::query("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|c| c.get(0))
                    .collect();
            match origin.as_str() {
                // The primary key's own index: the key is compared from the columns.
                "pk" => {}
                "u" => {
                    table.unique.insert(columns);
                }
                _ => {
                    table.indexes.insert(index, (unique, columns));
                }
            }
        }
        let mut fks: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list($1) \
             ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        {
            let fk = fks
                .entry(r.get(0))
                .or_insert_with(|| (Vec::new(), r.get(1), Vec::new(), r.get::<String, _>(4)));
            fk.0.push(r.get(2));
            // NULL: the referenced table's primary key (filled in below).
            if let Some(to) = r.get::<Option<String>, _>(3) {
                fk.2.push(to);
            }
        }
        table.foreign_keys = fks.into_values().collect();
        schema.insert(name, table);
    }
    // `REFERENCES t` without columns names t's primary key.
    let keys: BTreeMap<String, Vec<String>> = schema
        .iter()
        .map(|(n, t)| (n.clone(), t.primary_key.clone()))
        .collect();
    for table in schema.values_mut() {
        table.foreign_keys = std::mem::take(&mut table.foreign_keys)
            .into_iter()
            .map(|(from, to_table, to, on_delete)| {
                let to = if to.is_empty() {
                    keys.get(&to_table).cloned().unwrap_or_default()
                } else {
                    to
                };
                (from, to_table, to, on_delete)
            })
            .collect();
    }
    conn.close().await.unwrap();
    schema
}

/// A key constraint as read: its type, and its columns with their positions in the key.
type Constraint = (String, Vec<(i32, String)>);

/// Our tables on PostgreSQL are those of the `sluice` schema.
async fn postgres_schema(url: &str) -> Schema {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut schema = Schema::new();
    for r in sqlx::query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'sluice' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        let name: String = r.get(0);
        if !ignored(&name) {
            schema.insert(name, Table::default());
        }
    }
    for r in sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
         column_default::text FROM information_schema.columns WHERE table_schema = 'sluice'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        let Some(table) = schema.get_mut(&r.get::<String, _>(0)) else {
            continue;
        };
        table.columns.insert(
            r.get(1),
            Column {
                kind: coarse_type(&r.get::<String, _>(2)),
                not_null: r.get::<String, _>(3) == "NO",
                has_default: r.get::<Option<String>, _>(4).is_some(),
            },
        );
    }
    // Primary keys and unique constraints, with their columns in key order.
    let mut constraints: BTreeMap<(String, String), Constraint> = BTreeMap::new();
    for r in sqlx::query(
        "SELECT tc.table_name::text, tc.constraint_name::text, tc.constraint_type::text, \
         kcu.column_name::text, kcu.ordinal_position::int4 \
         FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage kcu \
           ON kcu.constraint_schema = tc.constraint_schema \
          AND kcu.constraint_name = tc.constraint_name \
          AND kcu.table_name = tc.table_name \
         WHERE tc.table_schema = 'sluice' AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        constraints
            .entry((r.get(0), r.get(1)))
            .or_insert_with(|| (r.get(2), Vec::new()))
            .1
            .push((r.get(4), r.get(3)));
    }
    for ((table, _), (kind, mut columns)) in constraints {
        let Some(table) = schema.get_mut(&table) else {
            continue;
        };
        columns.sort();
        let columns: Vec<String> = columns.into_iter().map(|(_, c)| c).collect();
        if kind == "PRIMARY KEY" {
            table.primary_key = columns;
        } else {
            table.unique.insert(columns);
        }
    }
    // Indexes that do not back a constraint (those were compared above).
    for r in sqlx::query(
        "SELECT t.relname::text, i.relname::text, x.indisunique, \
           ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n \
                 ORDER BY k.o) \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         WHERE t.relnamespace = 'sluice'::regnamespace \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = x.indrelid \
                           AND c.conindid = x.indexrelid AND c.contype IN ('p', 'u', 'x'))",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        if let Some(table) = schema.get_mut(&r.get::<String, _>(0)) {
            table.indexes.insert(r.get(1), (r.get(2), r.get(3)));
        }
    }
    for r in sqlx::query(
        "SELECT t.relname::text, f.relname::text, \
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n \
                 ORDER BY k.o), \
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n \
                 ORDER BY k.o), \
           CASE c.confdeltype WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' \
             WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' END \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_class f ON f.oid = c.confrelid \
         WHERE c.contype = 'f' AND c.connamespace = 'sluice'::regnamespace",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        if let Some(table) = schema.get_mut(&r.get::<String, _>(0)) {
            table
                .foreign_keys
                .insert((r.get(2), r.get(1), r.get(3), r.get(4)));
        }
    }
    conn.close().await.unwrap();
    schema
}

/// Every difference, one line each (empty: the schemas agree).
fn differences(sqlite: &Schema, postgres: &Schema) -> String {
    let mut out = String::new();
    let names: BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    for name in names {
        let (s, p) = match (sqlite.get(name), postgres.get(name)) {
            (Some(s), Some(p)) => (s, p),
            (Some(_), None) => {
                writeln!(out, "table {name}: only on SQLite").unwrap();
                continue;
            }
            (None, _) => {
                writeln!(out, "table {name}: only on PostgreSQL").unwrap();
                continue;
            }
        };
        let columns: BTreeSet<&String> = s.columns.keys().chain(p.columns.keys()).collect();
        for c in columns {
            match (s.columns.get(c), p.columns.get(c)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => {
                    writeln!(out, "column {name}.{c}: SQLite {a:?}, PostgreSQL {b:?}").unwrap()
                }
            }
        }
        if s.primary_key != p.primary_key {
            writeln!(
                out,
                "primary key of {name}: SQLite {:?}, PostgreSQL {:?}",
                s.primary_key, p.primary_key
            )
            .unwrap();
        }
        if s.unique != p.unique {
            writeln!(
                out,
                "unique constraints of {name}: SQLite {:?}, PostgreSQL {:?}",
                s.unique, p.unique
            )
            .unwrap();
        }
        let indexes: BTreeSet<&String> = s.indexes.keys().chain(p.indexes.keys()).collect();
        for i in indexes {
            match (s.indexes.get(i), p.indexes.get(i)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => {
                    writeln!(out, "index {i} on {name}: SQLite {a:?}, PostgreSQL {b:?}").unwrap()
                }
            }
        }
        if s.foreign_keys != p.foreign_keys {
            writeln!(
                out,
                "foreign keys of {name}: SQLite {:?}, PostgreSQL {:?}",
                s.foreign_keys, p.foreign_keys
            )
            .unwrap();
        }
    }
    out
}

/// A fresh database on the test PostgreSQL server (`SLUICE_TEST_PG_URL`, which CI and
/// `scripts/test.sh` always set): without one this test fails rather than skips.
async fn new_pg_database() -> String {
    let server = std::env::var("SLUICE_TEST_PG_URL").expect(
        "SLUICE_TEST_PG_URL must name a PostgreSQL server: the schema test compares the \
         PostgreSQL migrations with the SQLite ones (scripts/pg.sh starts a server)",
    );
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    let db = format!("schema_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (server_base, _) = server
        .rsplit_once('/')
        .expect("SLUICE_TEST_PG_URL ends in /<database>");
    format!("{server_base}/{db}")
}

/// Open an engine on each backend (which runs its migrations) and close it again.
async fn migrate(dir: &std::path::Path, database_url: Option<String>) {
    let config = Config {
        data_dir: dir.to_path_buf(),
        database_url,
        ..Config::default()
    };
    let (engine, _) = Engine::open(config, None).await.unwrap();
    drop(engine);
}

#[tokio::test]
async fn sqlite_and_postgresql_migrations_describe_the_same_schema() {
    let pg_url = new_pg_database().await;
    let sqlite_dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    migrate(sqlite_dir.path(), None).await;
    migrate(pg_dir.path(), Some(pg_url.clone())).await;

    let sqlite = sqlite_schema(&sqlite_dir.path().join("meta.db")).await;
    let postgres = postgres_schema(&pg_url).await;

    // Not vacuous: both catalogues were read.
    for schema in [&sqlite, &postgres] {
        let assets = schema.get("assets").expect("an assets table");
        assert!(assets.columns.contains_key("status"));
        assert_eq!(assets.primary_key, ["id"]);
        assert!(assets.indexes.contains_key("assets_tenant"));
        assert!(!assets.foreign_keys.is_empty());
    }
    let diff = differences(&sqlite, &postgres);
    assert!(
        diff.is_empty(),
        "the SQLite and PostgreSQL migrations have drifted apart:\n{diff}"
    );
}
