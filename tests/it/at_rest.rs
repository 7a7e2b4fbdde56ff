//! Secrets at rest: the database never holds a password, a TOTP secret or a recovery code
//! in clear. We create them through the CLI (so we know them), then search the raw bytes
//! of the database files (main file, -wal, -shm) and a logical dump of every table.

use crate::common::*;

/// Every cell of every table, as bytes (text as UTF-8, blobs raw, numbers as text).
fn logical_dump(db: &std::path::Path) -> Vec<u8> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type='table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                use rusqlite::types::ValueRef;
                match row.get_ref(i).unwrap() {
                    ValueRef::Null => {}
                    ValueRef::Integer(v) => out.extend_from_slice(v.to_string().as_bytes()),
                    ValueRef::Real(v) => out.extend_from_slice(v.to_string().as_bytes()),
                    ValueRef::Text(b) | ValueRef::Blob(b) => out.extend_from_slice(b),
                }
                out.push(0);
            }
        }
    }
    out
}

fn add_text(what: &str, s: &str, list: &mut Vec<(String, Vec<u8>)>) {
    list.push((what.to_string(), s.as_bytes().to_vec()));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn database_holds_no_secret_in_clear() {
    let env = Env::init();
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();

    // Passwords: given on stdin, changed with passwd, generated, imported.
    let given = "Given-Passw0rd-xyzzy";
    env.add_user("alice", given, &[]);
    add_text("user add password", given, &mut secrets);
    let changed = "Changed-Passw0rd-plugh";
    env.add_user("bob", STRONG, &[]);
    env.json_stdin(
        &["passwd", "bob", "--password-stdin"],
        &format!("{changed}\n"),
    );
    add_text("passwd password", changed, &mut secrets);
    let g = env.json(&[
        "user",
        "add",
        "carol",
        "--email",
        "c@example.org",
        "--generate-password",
    ]);
    add_text(
        "generated password",
        g["generated_password"].as_str().unwrap(),
        &mut secrets,
    );
    let imported = "Imported-Passw0rd-frotz";
    let file = env.path("users.jsonl");
    std::fs::write(
        &file,
        serde_json::json!({"username": "dave", "email": "d@example.org", "password": imported})
            .to_string(),
    )
    .unwrap();
    env.json(&["import", file.to_str().unwrap()]);
    add_text("imported password", imported, &mut secrets);

    // TOTP secrets and recovery codes (two enrolments, one reset in between).
    for (i, user) in ["alice", "bob", "alice"].into_iter().enumerate() {
        let v = env.enroll(user);
        let b32 = v["secret"].as_str().unwrap();
        add_text("base32 TOTP secret", b32, &mut secrets);
        add_text(
            "base32 TOTP secret (lower case)",
            &b32.to_lowercase(),
            &mut secrets,
        );
        let raw = authcore::totp::parse_base32(b32).unwrap();
        secrets.push(("raw TOTP secret".into(), raw.clone()));
        // Any 8-byte window of the raw secret is already too much.
        for (j, w) in raw.windows(8).enumerate() {
            secrets.push((format!("raw TOTP secret bytes {j}..{}", j + 8), w.to_vec()));
        }
        let uri = v["otpauth_uri"].as_str().unwrap();
        add_text("otpauth URI", uri, &mut secrets);
        for c in v["recovery_codes"].as_array().unwrap() {
            let c = c.as_str().unwrap();
            add_text("recovery code", c, &mut secrets);
            add_text(
                "recovery code without dash",
                &c.replace('-', ""),
                &mut secrets,
            );
            add_text(
                "recovery code upper case",
                &c.replace('-', "").to_uppercase(),
                &mut secrets,
            );
        }
        if i == 0 {
            env.json(&["reset-2fa", "alice"]);
        }
    }

    // The key lives outside the database.
    let key = std::fs::read(env.key()).unwrap();
    secrets.push(("key file contents".into(), key.clone()));
    if let Ok(text) = std::str::from_utf8(&key) {
        let t = text.trim();
        if t.len() >= 16 {
            add_text("key file text", t, &mut secrets);
        }
    }

    // Read the files before anything checkpoints (the -wal file may hold the newest pages)…
    let mut raw = Vec::new();
    let mut files = Vec::new();
    for e in std::fs::read_dir(env.dir.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("authd.db") && name != "authd.db.key" {
            raw.extend(std::fs::read(&p).unwrap());
            files.push(name);
        }
    }
    assert!(files.contains(&"authd.db".to_string()), "{files:?}");
    // …and every value, whatever page it sits on.
    let logical = logical_dump(&env.db);
    assert!(!logical.is_empty());
    // Sanity: the dump does see what we stored in clear on purpose.
    assert!(
        contains(&logical, b"c@example.org"),
        "the dump misses plain data"
    );
    assert!(
        contains(&raw, b"c@example.org"),
        "the raw files miss plain data"
    );

    let mut leaks = Vec::new();
    for (what, bytes) in &secrets {
        if contains(&raw, bytes) {
            leaks.push(format!("{what} in the raw files {files:?}"));
        }
        if contains(&logical, bytes) {
            leaks.push(format!("{what} in a table"));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets stored in clear:\n{}",
        leaks.join("\n")
    );
}
