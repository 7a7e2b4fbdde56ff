//! Item 9 (issue 13): authd on PostgreSQL, with one node and with several.
//!
//! `authbench run --db postgres://user@host:port/db [--nodes N]`. The users are generated
//! into a SQLite file exactly as for the SQLite parts (`provision`), then copied into the
//! database with the real `authctl db copy --to URL` after the database has been dropped
//! and created again (through the server's `postgres` database), so every configuration
//! starts from the same rows. The key file goes with it: every node is started with
//! `--db URL --key-file` the SQLite file's key. The load generator's connections are
//! spread over the nodes round-robin (client i → node i mod N), so a flow started on one
//! node is usually continued on another.
//!
//! Measured, in this order: the SQLite baseline (session checks at 16 clients on the
//! same generated data, one authd on the SQLite file, and the bare server); password
//! logins at 16 clients on one node against the argon2 ceiling of the same run; then for
//! 1 node and, when N ≥ 2, for N nodes: TOTP steps at 1, 16 and 256 clients, session
//! checks at 16 clients (the sessions those steps made), emailed-code steps at 1, 16 and
//! 256 clients. After every load run each node is checked: one that has exited ends the
//! part with its exit status and the end of its log.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::daemon::Proc;
use crate::load::{Spec, Stats, Workload};
use crate::report::{num, Figure};
use crate::{
    clients, lat_note, path_str, provision, secs, Bench, Login, LoginKind, Picker, SessionCheck,
};

/// The item of the PostgreSQL figures in the results table.
const ITEM: u8 = 9;
/// Connecting to the server (the admin connection) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database the PostgreSQL part runs on, from `--db`.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given: what authd and authctl get.
    pub url: String,
    /// The database's name (dropped and created again before each configuration).
    pub dbname: String,
    /// The same server and user, the `postgres` database: where DROP/CREATE DATABASE run.
    admin: postgres::Config,
}

impl Target {
    /// A `postgres://user[:password]@host[:port]/dbname` URL naming a database that may be
    /// dropped: a plain lower-case name, not `postgres` nor a template.
    pub fn parse(url: &str) -> Result<Target> {
        ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--db takes a postgres://user@host:port/dbname URL (the PostgreSQL part); got {url:?}"
        );
        let config: postgres::Config = url
            .parse()
            .with_context(|| format!("--db: cannot read the URL {url:?}"))?;
        let dbname = config
            .get_dbname()
            .filter(|d| !d.is_empty())
            .with_context(|| format!("--db: the URL {url:?} names no database"))?
            .to_string();
        ensure!(
            dbname.len() <= 63
                && dbname.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && dbname
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "--db: the database name {dbname:?} must be a plain lower-case name (letters, \
             digits, _): authbench drops and creates it"
        );
        ensure!(
            !["postgres", "template0", "template1"].contains(&dbname.as_str()),
            "--db: authbench drops and creates the URL's database; it will not drop {dbname:?}"
        );
        let mut admin = config;
        admin.dbname("postgres");
        admin.connect_timeout(CONNECT_TIMEOUT);
        Ok(Target {
            url: url.to_string(),
            dbname,
            admin,
        })
    }

    fn admin(&self) -> Result<postgres::Client> {
        self.admin
            .connect(postgres::NoTls)
            .with_context(|| format!("cannot connect to the server of {}", self.redacted()))
    }

    /// The URL without its password, for the results.
    pub fn redacted(&self) -> String {
        authcore::sql::redact_url(&self.url)
    }

    /// Drop the database (closing its connections) and create it again, empty.
    fn recreate(&self) -> Result<()> {
        let mut c = self.admin()?;
        // One statement per query: neither may run inside a transaction block.
        c.batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.dbname
        ))?;
        c.batch_execute(&format!("CREATE DATABASE \"{}\"", self.dbname))?;
        Ok(())
    }

    fn drop_database(&self) -> Result<()> {
        self.admin()?.batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.dbname
        ))?;
        Ok(())
    }

    /// The server's version and the settings that bear on the figures; and, when the
    /// server runs on this machine and its processes are visible, its postmaster's pid.
    fn server(&self) -> Result<(String, Option<u32>)> {
        let mut c = self.admin()?;
        let mut parts = Vec::new();
        for s in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "max_connections",
        ] {
            let row = c.query_one(&format!("SHOW {s}"), &[])?;
            parts.push(format!("{s}={}", row.get::<_, String>(0)));
        }
        let backend: i32 = c.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        let postmaster = crate::cpu::parent_of(backend as u32).filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|n| matches!(n.trim(), "postgres" | "postmaster"))
        });
        Ok((parts.join(", "), postmaster))
    }
}

fn nodes_label(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// The configurations measured: 1 node, and `nodes` when that is 2 or more.
pub fn configurations(nodes: usize) -> Vec<usize> {
    if nodes >= 2 {
        vec![1, nodes]
    } else {
        vec![1]
    }
}

impl Bench {
    /// Item 9: see the module documentation.
    pub(crate) fn postgres(&mut self) -> Result<()> {
        let Some(t) = self.pg.clone() else {
            let note = "PostgreSQL (item 9) not measured: no `--db postgres://…` was given \
                        (`scripts/bench.sh` gives one when PostgreSQL's server programs are \
                        installed, or with `--postgres`).";
            eprintln!("== {note}");
            self.notes.push(note.into());
            return Ok(());
        };
        let configs = configurations(self.nodes);
        eprintln!(
            "== PostgreSQL at {}, {} (item 9)",
            t.redacted(),
            configs
                .iter()
                .map(|n| nodes_label(*n))
                .collect::<Vec<_>>()
                .join(" and ")
        );
        let (settings, postmaster) = t.server()?;
        eprintln!("  server: {settings}");
        match postmaster {
            Some(pid) => crate::cpu::count_as_ours(pid),
            None => self.notes.push(
                "PostgreSQL's processes are not visible on this machine: its CPU time counts \
                 as other processes' in the notes."
                    .into(),
            ),
        }
        let plan_secs = self.plan.pg_secs;
        let dur = secs(self.plan.sweep_secs);
        let levels = self.plan.sweep_levels.clone();

        // The generated users, as for the SQLite parts, in a SQLite file of their own.
        let db = self.work.join("pg-steps.db");
        let key = provision::steps_db(&db)?;
        let (nu, na) = (self.plan.pg_users, self.plan.pg_audit);
        let gen = provision::grow(&db, &key, (0, nu), (0, na))?;
        let key_file = authcore::crypto::default_key_path(&db);
        eprintln!(
            "  generated {} users, {} audit rows in {gen:.1} s",
            num(nu as f64, ""),
            num(na as f64, "")
        );
        let mut picker = Picker::default();

        // The SQLite baseline: session checks at 16 clients on the same data, and the bare
        // server at each level.
        let d = self.authd(&db, &[], "pg-sqlite-baseline")?;
        let users = picker.take(self.plan.pg_sqlite_sessions as usize, nu)?;
        let (_, flows) = self.flows(&d, users, "totp", 32, "  (SQLite flows, not measured)")?;
        let (_, tokens) = self.totp_on(
            &[d.addr],
            flows,
            16,
            600.0,
            "  (SQLite sessions, not measured)",
        )?;
        let sqlite_tokens = tokens.len();
        let w: Arc<dyn Workload> = Arc::new(SessionCheck::new(Arc::new(tokens)));
        let bare = self.bare()?;
        let mut bare_rates = Vec::new();
        for &c in &levels {
            let b = self.load(
                bare.addr,
                &Spec::new(c, dur),
                w.clone(),
                &format!("bare hyper 200, {}", clients(c)),
            )?;
            bare_rates.push((c, b.rate()));
        }
        let bare16 = bare_rates
            .iter()
            .find(|(c, _)| *c == 16)
            .map(|x| x.1)
            .context("the sweep has no 16-client level")?;
        let sqlite = self.load(
            d.addr,
            &Spec::new(16, dur),
            w,
            "SQLite: session check, 16 clients",
        )?;
        self.stop(bare)?;
        self.stop(d)?;
        self.fig(
            Figure::new(
                ITEM,
                "pg_sqlite_session_per_s_c16",
                "SQLite, 1 node, the same data: Session checks (GET /v1/session), 16 clients \
                 (the PostgreSQL rows' baseline)",
                sqlite.rate(),
                "/s",
            )
            .vs(bare16, "bare hyper server, same clients")
            .info("—")
            .note(&lat_note(&sqlite)),
        );

        // The users of the steps, the same in every configuration (each starts from a
        // fresh copy of the file): some switched to emailed codes before any copy.
        let warm = self.plan.pg_warmup as usize;
        let totp_n = warm + self.plan.pg_totp_flows.iter().sum::<u64>() as usize;
        let email_n = warm + self.plan.pg_email_flows.iter().sum::<u64>() as usize;
        let totp_users = picker.take(totp_n, nu)?;
        let email_users = picker.take(email_n, nu)?;
        provision::use_email(&db, &email_users)?;

        // Password logins, one node, against the argon2 ceiling of this run.
        let (ceiling, _) = self.ceiling();
        let pw_db = self.password_db()?;
        let copy_pw = self.copy_into(&t, &pw_db)?;
        let pw_key = authcore::crypto::default_key_path(&pw_db);
        let mut nodes = self.nodes_on(&t, &pw_key, 1, None, "pg-password")?;
        let addrs: Vec<SocketAddr> = nodes.iter().map(|p| p.addr).collect();
        let real = self.load_on(
            &addrs,
            &Spec::new(16, secs(self.plan.login_secs)),
            Arc::new(Login {
                kind: LoginKind::Real,
                users: 16,
            }),
            "PostgreSQL, 1 node: password login, 16 clients",
        )?;
        check_nodes(&mut nodes)?;
        self.stop_all(nodes)?;
        let ratio = real.rate() / ceiling;
        self.fig(
            Figure::new(
                ITEM,
                "pg_password_logins_per_s",
                "PostgreSQL, 1 node: Password logins/s through authd (16 clients)",
                real.rate(),
                "/s",
            )
            .vs(ceiling, "argon2id ceiling of the same run")
            .goal("≥ 0.9 × ceiling", ratio >= 0.9)
            .note(&lat_note(&real)),
        );

        let mut copies = vec![format!("password users: {copy_pw:.1} s")];
        for &n in &configs {
            let label = nodes_label(n);
            let copy = self.copy_into(&t, &db)?;
            copies.push(format!("{label}: {copy:.1} s"));
            let mail_dir = self.work.join(format!("pg-mail-{n}"));
            std::fs::create_dir_all(&mail_dir)?;
            let mut nodes = self.nodes_on(&t, &key_file, n, Some(&mail_dir), &format!("pg{n}"))?;
            let addrs: Vec<SocketAddr> = nodes.iter().map(|p| p.addr).collect();
            let pids: Vec<u32> = nodes.iter().map(|p| p.pid).collect();

            // TOTP: a warm-up, then each level; the sessions made feed the session checks.
            let mut rest = totp_users.iter().copied();
            let (_, flows) = self.flows_on(
                &addrs,
                rest.by_ref().take(warm).collect(),
                "totp",
                32,
                "  (TOTP flows for the warm-up, not measured)",
            )?;
            self.totp_on(&addrs, flows, 32, 600.0, "  (TOTP warm-up, not measured)")?;
            check_nodes(&mut nodes)?;
            let mut tokens = Vec::new();
            for (i, &c) in levels.iter().enumerate() {
                let (_, flows) = self.flows_on(
                    &addrs,
                    rest.by_ref()
                        .take(self.plan.pg_totp_flows[i] as usize)
                        .collect(),
                    "totp",
                    32,
                    "  (flows for the next run, not measured)",
                )?;
                let what = format!("PostgreSQL, {label}: TOTP step, {}", clients(c));
                let split = crate::cpu::Split::start(&pids);
                let (s, sessions) = self.totp_on(&addrs, flows, c, plan_secs, &what)?;
                let cpu = self.cpu_note(&split, &pids);
                check_nodes(&mut nodes)?;
                tokens.extend(sessions);
                self.step_figure(
                    n,
                    "totp",
                    "TOTP step (POST /v1/login/totp)",
                    c,
                    &s,
                    &bare_rates,
                    &cpu,
                );
            }

            // Session checks at 16 clients, against SQLite's on the same data: as many
            // sessions, checked in turn.
            let made = tokens.len();
            tokens.truncate(sqlite_tokens);
            let split = crate::cpu::Split::start(&pids);
            let s = self.load_on(
                &addrs,
                &Spec::new(16, dur),
                Arc::new(SessionCheck::new(Arc::new(tokens))),
                &format!("PostgreSQL, {label}: session check, 16 clients"),
            )?;
            let cpu = self.cpu_note(&split, &pids);
            check_nodes(&mut nodes)?;
            let within = s.rate() >= 0.9 * sqlite.rate();
            self.fig(
                Figure::new(
                    ITEM,
                    &format!("pg_n{n}_session_per_s_c16"),
                    &format!("PostgreSQL, {label}: Session checks (GET /v1/session), 16 clients"),
                    s.rate(),
                    "/s",
                )
                .vs(
                    sqlite.rate(),
                    "SQLite's session checks, same data, same run",
                )
                .goal("within 10 % of SQLite's (≥ 0.9 ×)", within)
                .note(&format!(
                    "{}; {} × the bare server ({}); {} sessions checked in turn ({} made), \
                     as many as in the SQLite baseline; {cpu}",
                    lat_note(&s),
                    num(s.rate() / bare16, ""),
                    num(bare16, "/s"),
                    num(made.min(sqlite_tokens) as f64, ""),
                    num(made as f64, "")
                )),
            );

            // Emailed codes: the password step mails each code into the shared mail
            // directory; the codes are read back, then the measured step runs.
            let mut rest = email_users.iter().copied();
            let flows = self.mailed_flows(&addrs, rest.by_ref().take(warm).collect(), &mail_dir)?;
            self.email_on(
                &addrs,
                flows,
                32,
                600.0,
                "  (email-code warm-up, not measured)",
            )?;
            check_nodes(&mut nodes)?;
            for (i, &c) in levels.iter().enumerate() {
                let users = rest
                    .by_ref()
                    .take(self.plan.pg_email_flows[i] as usize)
                    .collect();
                let flows = self.mailed_flows(&addrs, users, &mail_dir)?;
                let what = format!("PostgreSQL, {label}: email-code step, {}", clients(c));
                let split = crate::cpu::Split::start(&pids);
                let s = self.email_on(&addrs, flows, c, plan_secs, &what)?;
                let cpu = self.cpu_note(&split, &pids);
                check_nodes(&mut nodes)?;
                self.step_figure(
                    n,
                    "email",
                    "Email-code step (POST /v1/login/email)",
                    c,
                    &s,
                    &bare_rates,
                    &cpu,
                );
            }
            self.stop_all(nodes)?;
        }
        t.drop_database()?;

        self.notes.push(format!(
            "PostgreSQL (item 9, issue 13), said plainly: `authbench run --db {} --nodes {}`; \
             the server ({settings}) runs on the same cores as authd and the load generator. \
             The users are generated into a SQLite file as for the SQLite parts ({} users, {} \
             audit rows, the cheap argon2 hash; the password users `p00`…`p15` with default \
             hashes in a database of their own), and before each configuration the database \
             is dropped, created again and filled with `authctl --db FILE db copy --to URL` \
             ({}). Every node is `authd --db URL --key-file KEY --mail-dir DIR` (the file's \
             key; one mail directory shared by the nodes) with the flags of the SQLite runs, \
             on its own loopback port; the load generator's connections go to the nodes \
             round-robin (client i to node i mod N), so with one client only the first node \
             works and a flow made on one node is mostly stepped on another. Each measured step \
             run stops after {} s or when its flows run out (every step a user and a code never \
             used in that copy); {} unmeasured steps warm each configuration up. The session \
             checks use the sessions the TOTP runs made; their baseline is one authd on the \
             SQLite file (the same data, {} sessions of its own) measured in this part, and the \
             bare server. Password logins: one node, 16 clients, against the argon2 ceiling \
             of this run.",
            t.redacted(),
            self.nodes,
            num(nu as f64, ""),
            num(na as f64, ""),
            copies.join(", "),
            num(plan_secs, ""),
            num(warm as f64, ""),
            num(self.plan.pg_sqlite_sessions as f64, ""),
        ));
        Ok(())
    }

    /// Where the CPU went since `split` started, for a figure's note.
    fn cpu_note(&self, split: &crate::cpu::Split, nodes: &[u32]) -> String {
        let (pg, authd, gen) = split.shares(nodes, self.cores);
        let pct = |x: f64| format!("{:.0} %", x * 100.0);
        format!(
            "CPU of the {} cores: PostgreSQL {}, authd {}, load generator {}",
            self.cores,
            pct(pg),
            pct(authd),
            pct(gen)
        )
    }

    /// One step figure: the goal (≥ 5,000/s) is at 16 clients; the others are shown.
    #[allow(clippy::too_many_arguments)]
    fn step_figure(
        &mut self,
        n: usize,
        id: &str,
        name: &str,
        c: usize,
        s: &Stats,
        bare: &[(usize, f64)],
        cpu: &str,
    ) {
        let mut f = Figure::new(
            ITEM,
            &format!("pg_n{n}_{id}_per_s_c{c}"),
            &format!("PostgreSQL, {}: {name}, {}", nodes_label(n), clients(c)),
            s.rate(),
            "/s",
        )
        .note(&format!("{}; {cpu}", lat_note(s)));
        if let Some((_, b)) = bare.iter().find(|(bc, _)| *bc == c) {
            f = f.vs(*b, "bare hyper server, same clients");
        }
        f = if c == 16 {
            f.goal("≥ 5,000/s", s.rate() >= 5_000.0)
        } else {
            f.info("—")
        };
        self.fig(f);
    }

    /// Empty the target database and copy the SQLite file `from` into it with the real
    /// `authctl db copy`; the seconds the copy took.
    fn copy_into(&self, t: &Target, from: &Path) -> Result<f64> {
        t.recreate()?;
        let started = Instant::now();
        let out = Command::new(self.bin("authctl"))
            .env_remove("AUTHCTL_DB")
            .env_remove("AUTHCTL_KEY_FILE")
            .arg("--db")
            .arg(from)
            .args(["db", "copy", "--to", &t.url])
            .output()
            .context("cannot run authctl db copy")?;
        ensure!(
            out.status.success(),
            "authctl --db {} db copy --to {}: {}",
            from.display(),
            t.redacted(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let took = started.elapsed().as_secs_f64();
        eprintln!(
            "  authctl db copy of {} into {}: {took:.1} s",
            from.display(),
            t.redacted()
        );
        Ok(took)
    }

    /// `n` authd nodes on the target with `key` (and `--mail-dir`), each on its own
    /// loopback port.
    fn nodes_on(
        &self,
        t: &Target,
        key: &Path,
        n: usize,
        mail_dir: Option<&Path>,
        tag: &str,
    ) -> Result<Vec<Proc>> {
        let mut extra = vec!["--key-file", path_str(key)?];
        if let Some(m) = mail_dir {
            extra.extend(["--mail-dir", path_str(m)?]);
        }
        (0..n)
            .map(|i| self.authd(&t.url, &extra, &format!("{tag}-node{}", i + 1)))
            .collect()
    }

    fn stop_all(&self, nodes: Vec<Proc>) -> Result<()> {
        for p in nodes {
            self.stop(p)?;
        }
        Ok(())
    }

    /// The password step of `users` (switched to emailed codes) over the nodes, and each
    /// flow's code read from the mail directory: (user, flow, code).
    fn mailed_flows(
        &self,
        to: &[SocketAddr],
        users: Vec<u64>,
        mail_dir: &Path,
    ) -> Result<Vec<(u64, String, String)>> {
        let (_, flows) = self.flows_on(
            to,
            users,
            "email_otp",
            32,
            "  (email flows for the next run, not measured)",
        )?;
        crate::with_mailed_codes(flows, mail_dir)
    }
}

/// Every node still running; one that has exited is an error naming it.
fn check_nodes(nodes: &mut [Proc]) -> Result<()> {
    for (i, p) in nodes.iter_mut().enumerate() {
        if let Some(how) = p.exited() {
            bail!("PostgreSQL node {} died: {how}", i + 1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_postgres_url_naming_a_database_that_may_be_dropped() {
        let t = Target::parse("postgres://authd@127.0.0.1:54321/authbench").unwrap();
        assert_eq!(t.dbname, "authbench");
        assert_eq!(t.url, "postgres://authd@127.0.0.1:54321/authbench");
        // The admin connection: same server and user, the `postgres` database.
        assert_eq!(t.admin.get_dbname(), Some("postgres"));
        assert_eq!(t.admin.get_user(), Some("authd"));
        assert_eq!(t.admin.get_ports(), &[54321]);
        assert_eq!(t.admin.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let t = Target::parse("postgresql://u:secret@db.internal/bench_2").unwrap();
        assert_eq!(t.dbname, "bench_2");
        assert!(!t.redacted().contains("secret"), "{}", t.redacted());

        for bad in [
            "target/bench/work/steps.db",
            "postgres://authd@127.0.0.1:54321/",
            "postgres://authd@127.0.0.1:54321",
            "postgres://authd@127.0.0.1:54321/postgres",
            "postgres://authd@127.0.0.1:54321/template1",
            "postgres://authd@127.0.0.1:54321/Bench",
            "postgres://authd@127.0.0.1:54321/a%22b",
            "postgres://authd@127.0.0.1:notaport/authbench",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn one_node_is_measured_and_several_as_well() {
        assert_eq!(configurations(1), vec![1]);
        assert_eq!(configurations(2), vec![1, 2]);
        assert_eq!(configurations(3), vec![1, 3]);
    }
}
