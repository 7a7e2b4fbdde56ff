//! PostgreSQL for the tests (issue 13): a private cluster per test — `initdb` into a
//! temporary directory, `pg_ctl start` on a free loopback port with its socket in that
//! directory, stopped and deleted when the handle drops. No system service, no shared
//! state between tests. scripts/test.sh installs Debian's `postgresql` when missing.
//!
//! And the schema test: `schema.postgres.sql` describes the same tables, columns, keys,
//! indexes and constraints as a database the SQLite code creates (`schema.sql` with every
//! migration), at the same schema version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Where PostgreSQL's server programs are: `AUTHD_TEST_PG_BIN`, else Debian's
/// `/usr/lib/postgresql/<newest>/bin`, else `initdb` on PATH.
pub fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("AUTHD_TEST_PG_BIN") {
        return PathBuf::from(d);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return bin;
    }
    require("initdb", "postgresql");
    PathBuf::from("")
}

/// A running private PostgreSQL cluster; stopped and removed on drop.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// root cannot run the server: then every server program runs as `postgres`.
    run_as: Option<&'static str>,
}

impl Pg {
    pub fn start() -> Pg {
        let bin = pg_bin();
        let run_as = is_root().then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("authd-pg-")
            .tempdir()
            .expect("temp dir");
        if let Some(user) = run_as {
            let out = Command::new("chown")
                .args([user, &dir.path().display().to_string()])
                .output()
                .expect("chown");
            assert!(
                out.status.success(),
                "chown the cluster directory to {user}"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Pg {
            dir,
            bin,
            port,
            run_as,
        };
        let data = pg.data().display().to_string();
        pg.server_cmd(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "authd",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg.psql("postgres", "CREATE DATABASE authd");
        pg
    }

    /// Start the (stopped) cluster again on the same port and data.
    pub fn start_again(&self) {
        let data = self.data().display().to_string();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.server_cmd(
            "pg_ctl",
            &[
                "-D", &data, "-o", &opts, "-l", &log, "-w", "-t", "30", "start",
            ],
        );
    }

    /// Stop the cluster at once (`-m immediate`: connections cut, as a crash would).
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.server_cmd("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn server_cmd(&self, prog: &str, args: &[&str]) {
        let exe = self.bin.join(prog);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = run(cmd, None, std::time::Duration::from_secs(60));
        assert!(
            out.code == Some(0),
            "{prog} {args:?} failed: {}{}\n{}",
            out.stdout,
            out.stderr,
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// `postgres://authd@127.0.0.1:PORT/DB`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://authd@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL through `psql` (stop at the first error); rows as `|`-separated lines.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_args(db, &["-c", sql])
    }

    /// Run a file of SQL through `psql`, stopping at the first error.
    pub fn psql_file(&self, db: &str, file: &Path) -> String {
        self.psql_args(db, &["-f", &file.display().to_string()])
    }

    fn psql_args(&self, db: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(self.bin.join("psql"));
        if !self.bin.join("psql").exists() {
            cmd = Command::new("psql");
        }
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-d"])
            .arg(self.url(db))
            .args(args);
        let out = run(cmd, None, std::time::Duration::from_secs(60));
        assert!(out.code == Some(0), "psql {args:?} failed: {}", out.stderr);
        out.stdout
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// One table's shape, in terms both engines share.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    /// name -> (type: integer | text | blob, not null, default as a literal, primary key position)
    columns: BTreeMap<String, (String, bool, String, u32)>,
    /// (columns, referenced table, referenced columns, on delete)
    foreign_keys: BTreeSet<(String, String, String, String)>,
    /// Named indexes: name -> (unique, columns, partial)
    indexes: BTreeMap<String, (bool, String, bool)>,
    /// The column lists of unique constraints that are not named indexes.
    unique: BTreeSet<String>,
    checks: usize,
}

/// A default as both engines would write the literal: `'user'::text` -> `'user'`.
fn literal(default: &str) -> String {
    let d = default.trim();
    match d.find("::") {
        Some(i) if d.starts_with('\'') => d[..i].to_string(),
        _ => d.to_string(),
    }
}

fn sqlite_shape(db: &Path) -> (BTreeMap<String, Table>, i64) {
    let conn = rusqlite::Connection::open(db).expect("open the SQLite database");
    let version: i64 = conn
        .query_row("PRAGMA user_version", (), |r| r.get(0))
        .unwrap();
    let mut tables = BTreeMap::new();
    let names: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (name, sql) in names {
        let mut t = Table {
            checks: sql.to_uppercase().matches("CHECK (").count(),
            ..Table::default()
        };
        let mut st = conn
            .prepare(&format!(
                "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{name}')"
            ))
            .unwrap();
        let cols = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, u32>(4)?,
                ))
            })
            .unwrap();
        for c in cols {
            let (col, ty, notnull, default, pk) = c.unwrap();
            let ty = ty.to_lowercase();
            // An INTEGER PRIMARY KEY is the rowid: never NULL, like PostgreSQL's key.
            let notnull = notnull || pk > 0;
            t.columns.insert(
                col,
                (ty, notnull, literal(&default.unwrap_or_default()), pk),
            );
        }
        let fks: Vec<(i64, String, String, String, String)> = conn
            .prepare(&format!(
                "SELECT id, \"from\", \"table\", \"to\", on_delete FROM pragma_foreign_key_list('{name}') ORDER BY id, seq"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (_, from, table, to, on_delete) in fks {
            t.foreign_keys
                .insert((from, table, to, on_delete.to_uppercase()));
        }
        let idx: Vec<(String, bool, String, bool)> = conn
            .prepare(&format!(
                "SELECT name, \"unique\", origin, partial FROM pragma_index_list('{name}')"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (iname, unique, origin, partial) in idx {
            let cols: Vec<String> = conn
                .prepare(&format!(
                    "SELECT name FROM pragma_index_info('{iname}') ORDER BY seqno"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let cols = cols.join(",");
            match origin.as_str() {
                "c" => {
                    t.indexes.insert(iname, (unique, cols, partial));
                }
                "u" => {
                    t.unique.insert(cols);
                }
                _ => {} // the primary key, compared through the columns
            }
        }
        tables.insert(name, t);
    }
    (tables, version)
}

fn pg_shape(pg: &Pg) -> (BTreeMap<String, Table>, i64) {
    let rows = |sql: &str| -> Vec<Vec<String>> {
        pg.psql("authd", sql)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect()
    };
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for r in rows("SELECT table_name FROM information_schema.tables WHERE table_schema='public' AND table_type='BASE TABLE'") {
        tables.insert(r[0].clone(), Table::default());
    }
    let pk_pos: BTreeMap<(String, String), u32> = rows(
        "SELECT kcu.table_name, kcu.column_name, kcu.ordinal_position
           FROM information_schema.table_constraints tc
           JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
          WHERE tc.table_schema='public' AND tc.constraint_type='PRIMARY KEY'",
    )
    .into_iter()
    .map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().unwrap()))
    .collect();
    for r in rows(
        "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
           FROM information_schema.columns WHERE table_schema='public'",
    ) {
        let ty = match r[2].as_str() {
            "bigint" => "integer",
            "text" => "text",
            "bytea" => "blob",
            other => other,
        };
        let pk = pk_pos
            .get(&(r[0].clone(), r[1].clone()))
            .copied()
            .unwrap_or(0);
        if let Some(t) = tables.get_mut(&r[0]) {
            t.columns.insert(
                r[1].clone(),
                (ty.to_string(), r[3] == "NO", literal(&r[4]), pk),
            );
        }
    }
    for r in rows(
        "SELECT c.conrelid::regclass::text,
                (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
                c.confrelid::regclass::text,
                (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum),
                CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' WHEN 'r' THEN 'RESTRICT'
                                   WHEN 'd' THEN 'SET DEFAULT' ELSE 'NO ACTION' END
           FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    ) {
        if let Some(t) = tables.get_mut(&r[0]) {
            t.foreign_keys
                .insert((r[1].clone(), r[2].clone(), r[3].clone(), r[4].clone()));
        }
    }
    for r in rows(
        "SELECT conrelid::regclass::text, count(*) FROM pg_constraint
          WHERE contype = 'c' AND connamespace = 'public'::regnamespace GROUP BY 1",
    ) {
        if let Some(t) = tables.get_mut(&r[0]) {
            t.checks = r[1].parse().unwrap();
        }
    }
    // Indexes: those behind a constraint (primary key, UNIQUE) are keyed by their
    // columns, the others by name, as SQLite lists them.
    for r in rows(
        "SELECT t.relname, i.relname, x.indisunique, x.indisprimary,
                (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum),
                x.indpred IS NOT NULL,
                EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
          WHERE t.relnamespace = 'public'::regnamespace",
    ) {
        let Some(t) = tables.get_mut(&r[0]) else {
            continue;
        };
        let (unique, primary, partial, constraint) =
            (r[2] == "t", r[3] == "t", r[5] == "t", r[6] == "t");
        if primary {
            continue;
        }
        if constraint {
            t.unique.insert(r[4].clone());
        } else {
            t.indexes.insert(r[1].clone(), (unique, r[4].clone(), partial));
        }
    }
    let version = pg
        .psql(
            "authd",
            "SELECT value FROM meta WHERE key = 'schema_version'",
        )
        .trim()
        .parse()
        .expect("schema_version in meta");
    (tables, version)
}

#[test]
fn the_postgres_schema_matches_sqlite_table_by_table() {
    let env = Env::init();
    let pg = Pg::start();
    pg.psql_file("authd", &repo_root().join("schema.postgres.sql"));
    let (lite, lite_version) = sqlite_shape(&env.db);
    let (post, post_version) = pg_shape(&pg);
    assert_eq!(
        post_version, lite_version,
        "schema.postgres.sql is at another version than schema.sql + migrations/"
    );
    assert!(lite.len() >= 19, "SQLite lists {} tables", lite.len());
    assert_eq!(
        post.keys().collect::<Vec<_>>(),
        lite.keys().collect::<Vec<_>>(),
        "the two engines have other tables"
    );
    for (name, l) in &lite {
        assert_eq!(
            &post[name], l,
            "table {name}: PostgreSQL (left) and SQLite (right) differ"
        );
    }
    // And the check can tell: a column PostgreSQL lacks is a difference.
    pg.psql("authd", "ALTER TABLE audit DROP COLUMN mac");
    assert_ne!(pg_shape(&pg).0["audit"], lite["audit"]);
}

#[test]
fn the_session_epoch_moves_and_notifies_on_postgres_as_on_sqlite() {
    let pg = Pg::start();
    pg.psql_file("authd", &repo_root().join("schema.postgres.sql"));
    let epoch = || -> i64 {
        pg.psql("authd", "SELECT n FROM session_epoch")
            .trim()
            .parse()
            .unwrap()
    };
    pg.psql(
        "authd",
        "INSERT INTO orgs(name, name_key, created_at) VALUES ('default', 'default', 0);
         INSERT INTO users(username, username_key, email, org_id, created_at, updated_at)
              VALUES ('alice', 'alice', 'a@example.org', 1, 0, 0);",
    );
    let e0 = epoch();
    // A column a session check does not read leaves the epoch alone...
    pg.psql("authd", "UPDATE users SET failed_attempts = 3");
    assert_eq!(epoch(), e0);
    // ...a lock moves it...
    pg.psql("authd", "UPDATE users SET locked_at = 10");
    assert_eq!(epoch(), e0 + 1);
    // ...and every listener hears it in the same transaction's commit.
    let heard = pg.psql(
        "authd",
        "LISTEN authd_session_epoch; UPDATE users SET role = 'admin';",
    );
    assert_eq!(epoch(), e0 + 2);
    assert!(
        heard.contains("notification \"authd_session_epoch\""),
        "psql heard: {heard:?}"
    );
}

/// A PostgreSQL database at schema version 8 (one authenticator app per user, keyed by
/// the user) is migrated to 9 by authd's opening: the same tables as SQLite's again, and
/// the user's app kept, named, still signing in; a new app gets a fresh id.
#[test]
fn a_version_8_postgres_database_migrates_keeping_the_users_app() {
    use authcore::store::factors;
    use authcore::totp;
    let pg = Pg::start();
    let root = repo_root();
    let full = std::fs::read_to_string(root.join("schema.postgres.sql")).expect("schema");
    let m9 = std::fs::read_to_string(root.join("migrations/postgres/0009_totp_apps.sql"))
        .expect("migration");
    let v8 = full
        .replace(&m9, "")
        .replace("('schema_version', '9')", "('schema_version', '8')");
    assert!(
        v8.len() < full.len() && v8.contains("'8'"),
        "version 8 made"
    );
    let file = pg.dir.path().join("v8.sql");
    std::fs::write(&file, v8).expect("write v8.sql");
    pg.psql_file("authd", &file);

    let key = authcore::crypto::SecretKey::from_bytes([7; 32]);
    let secret = totp::generate_secret();
    let now = now();
    let step = totp::step_of(now);
    let url = pg.url("authd");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    c.batch_execute(
        "INSERT INTO orgs(name, name_key, created_at) VALUES ('default', 'default', 0);
         INSERT INTO users(username, username_key, email, org_id, mfa_method, created_at, updated_at)
              VALUES ('vera', 'vera', 'v@example.org', 1, 'totp', 0, 0);",
    )
    .expect("a user");
    let blob = key.encrypt(&secret, "totp:1");
    c.execute(
        "INSERT INTO totp_credentials(user_id, secret_enc, confirmed_at, last_step, created_at)
         VALUES (1, $1, 5, $2, 4)",
        &[&blob, &(step - 1)],
    )
    .expect("an app");
    drop(c);

    let conn = authcore::db::pg::open(&url, true).expect("open and migrate");
    assert_eq!(authcore::db::schema_version(&conn).expect("version"), 9);
    let apps = factors::list_totp(&conn, 1).expect("apps");
    assert_eq!(apps.len(), 1);
    assert_eq!(
        (
            apps[0].name.as_str(),
            apps[0].created_at,
            apps[0].confirmed_at
        ),
        ("Authenticator app", 4, Some(5))
    );
    let code = |s: &[u8], at: i64| totp::code_at_step(s, at, totp::Algorithm::Sha1, 6);
    let check = |c: &str| {
        factors::check_totp(&conn, &key, 1, factors::Apps::Confirmed, c, now, 1)
            .expect("check")
            .map(|m| m.name)
    };
    assert_eq!(
        check(&code(&secret, step - 1)),
        Err(totp::TotpError::Replayed)
    );
    assert_eq!(check(&code(&secret, step)), Ok("Authenticator app".into()));
    let id = factors::add_totp(&conn, &key, 1, "phone", &totp::generate_secret(), now)
        .expect("a second app");
    assert!(
        id > apps[0].id,
        "the identity sequence is past the migrated rows"
    );
    drop(conn);

    // The migrated tables are SQLite's.
    let env = Env::sqlite();
    env.ctl(&["init"]).ok();
    let (lite, _) = sqlite_shape(&env.db);
    let (post, _) = pg_shape(&pg);
    assert_eq!(post["totp_credentials"], lite["totp_credentials"]);
    assert_eq!(
        post.keys().collect::<Vec<_>>(),
        lite.keys().collect::<Vec<_>>()
    );
}
