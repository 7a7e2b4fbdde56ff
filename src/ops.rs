//! The administration of one database as methods of [`Core`]: users, passwords, second
//! factors, organisations, groups, policy, terms, sessions, devices, import and the audit
//! log. authctl is a front end over these methods as the daemon is over the login steps:
//! it holds no SQL, reads no clock and writes no audit row itself.
//!
//! Each change takes the acting [`Actor`], reads the time from the core's clock, runs in
//! one transaction and writes its audit row in it, so the change and its row commit
//! together or not at all. Actions on one user go through [`admin::action`] (tenancy,
//! roles); settings that hold for every organisation (organisations, groups, policy,
//! terms, import) are for actors without an organisation scope. A refused command that
//! the core did not audit itself is recorded with [`Core::audit_refusal`].

use crate::sql::Connection;
use serde::Serialize;
use serde_json::json;

use crate::admin::{self, Actor};
use crate::audit::{self, Outcome};
use crate::core::{Clock, Core};
use crate::crypto::SecretKey;
use crate::db::{self, Location};
use crate::error::{Error, Result, RuleResult};
use crate::kinds::{AuditEvent, MfaMethod};
use crate::password::{Hashing, PasswordPolicy};
use crate::policy::{self, Policy};
use crate::store::factors::{self, Device};
use crate::store::orgs::{self, Group, Org};
use crate::store::sessions::{self, Session};
use crate::store::terms::{self, Terms};
use crate::store::users::{self, NewUser, Role, User};
use crate::totp;

/// How far [`Core::totp_test`] looks for a matching code, in steps either side (5 min).
pub const DIAGNOSIS_WINDOW: i64 = 10;

/// The policy error for a weak password, naming each unmet rule.
pub fn weak_password(checks: Vec<RuleResult>) -> Error {
    let unmet: Vec<String> = checks
        .iter()
        .filter(|r| !r.met)
        .map(|r| r.description.clone())
        .collect();
    Error::Policy {
        message: format!(
            "the password does not meet the policy: {}",
            unmet.join(", ")
        ),
        rules: checks,
    }
}

/// Check `password` against `rules` (the account's, or [`Policy::password_least`] before
/// the account exists) and hash it (slow: outside any transaction).
fn check_and_hash(
    hashing: &Hashing,
    password: &str,
    rules: &PasswordPolicy,
    policy: &Policy,
) -> Result<String> {
    check_rules(rules, password)?;
    crate::password::hash_password(hashing, password, policy.argon2)
        .map_err(|e| Error::Io(format!("cannot hash the password: {e}")))
}

/// [`weak_password`] unless `password` meets every rule of `rules`.
fn check_rules(rules: &PasswordPolicy, password: &str) -> Result<()> {
    let checks = rules.check(password);
    if !PasswordPolicy::is_ok(&checks) {
        return Err(weak_password(checks));
    }
    Ok(())
}

/// Settings for every organisation are not for an org admin.
pub(crate) fn require_global(actor: &Actor) -> Result<()> {
    if actor.org_scope.is_some() || !actor.manages_admins {
        return Err(Error::Forbidden(
            "organisations, groups, policy, terms and imports are managed by admins".into(),
        ));
    }
    Ok(())
}

/// A new user as [`Core::add_user`] takes it (the password in clear; the core hashes it).
pub struct UserSpec<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub org: Option<&'a str>,
    pub groups: &'a [String],
    pub role: Role,
    pub password: Option<&'a str>,
    pub must_change_password: bool,
}

/// What [`Core::users`] lists.
#[derive(Debug, Default, Clone)]
pub struct UserQuery {
    pub org: Option<String>,
    pub locked: bool,
    pub group: Option<String>,
}

/// One user with what hangs off them, as `user show` prints it.
#[derive(Debug, Serialize)]
pub struct UserOverview {
    #[serde(flatten)]
    pub user: User,
    /// The user's authenticator apps (no secrets), oldest first.
    pub totp_apps: Vec<TotpAppView>,
    pub recovery_codes_remaining: i64,
    pub sessions: usize,
    pub devices: usize,
}

/// One authenticator app of a user, as `authctl user show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct TotpAppView {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    /// When a code confirmed it; None while it waits for its first code.
    pub confirmed_at: Option<String>,
}

impl From<factors::TotpApp> for TotpAppView {
    fn from(a: factors::TotpApp) -> TotpAppView {
        TotpAppView {
            id: a.id,
            name: a.name,
            created_at: crate::util::rfc3339(a.created_at),
            confirmed_at: a.confirmed_at.map(crate::util::rfc3339),
        }
    }
}

/// The changes of [`Core::set_user`]; at least one must be given.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub org: Option<String>,
    pub role: Option<Role>,
    pub add_groups: Vec<String>,
    pub remove_groups: Vec<String>,
}

impl UserChanges {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.org.is_none()
            && self.role.is_none()
            && self.add_groups.is_empty()
            && self.remove_groups.is_empty()
    }
}

/// A password change of [`Core::set_password`].
pub enum PasswordChange<'a> {
    /// Set this password; `expire` also forces a change at the next login.
    Set { password: &'a str, expire: bool },
    /// Only force a change at the next login.
    Expire,
}

/// A second factor about to be enrolled ([`Core::prepare_enrollment`]): shown to the
/// operator before [`Core::enroll`] stores it.
pub struct Enrollment {
    pub user_id: i64,
    pub method: MfaMethod,
    pub secret: Option<Vec<u8>>,
    pub otpauth_uri: Option<String>,
}

/// What [`Core::enroll`] stored: the recovery codes are shown once.
pub struct Enrolled {
    pub user: User,
    pub recovery_codes: Vec<String>,
}

/// The answer of [`Core::totp_test`].
#[derive(Debug, Clone, Serialize)]
pub struct TotpDiagnosis {
    pub username: String,
    /// The authenticator app the code matched (the nearest match of all the user's
    /// confirmed apps), if any.
    pub app: Option<String>,
    #[serde(rename = "match")]
    pub matched: bool,
    pub offset: Option<i64>,
    pub step: Option<i64>,
    pub already_used: bool,
    pub accepted_window: i64,
}

/// What to revoke: one session or device by id, or all of a user's.
#[derive(Debug, Clone)]
pub enum Target {
    Id(i64),
    User(String),
}

/// One user of an import batch, hashed already (the import hashes in parallel), and the
/// line of the file it came from.
pub struct ImportUser<'a> {
    pub line: usize,
    pub user: NewUser<'a>,
}

/// How [`Core::revoke_devices`] and [`Core::revoke_sessions`] revoke.
struct Revocation {
    event: AuditEvent,
    what: &'static str,
    one: fn(&Connection, i64, i64) -> Result<bool>,
    all: fn(&Connection, i64, i64) -> Result<usize>,
    one_key: &'static str,
    all_key: &'static str,
}

/// The policy settings changed by [`Core::set_policy`]: (key, value).
pub type Settings = Vec<(String, String)>;

impl Core {
    /// The core of an existing database for an operator's command: refuses a missing or
    /// blank file (only [`Core::create`] makes one), migrates, checks the key file.
    pub fn open(loc: &Location, hashing: Hashing, clock: Clock) -> Result<Core> {
        Core::open_as(loc, hashing, clock, false)
    }

    /// [`Core::open`] for a command that only reads: the database is opened, migrated and
    /// its key file checked alike, but the core starts no thread and refuses every write
    /// ([`Core::start_read_only`]).
    pub fn open_read_only(loc: &Location, hashing: Hashing, clock: Clock) -> Result<Core> {
        Core::open_as(loc, hashing, clock, true)
    }

    fn open_as(loc: &Location, hashing: Hashing, clock: Clock, read_only: bool) -> Result<Core> {
        let conn = db::open_initialised(&loc.db)?;
        let key = db::load_key(&conn, &loc.key)?;
        let core = if read_only {
            Core::start_read_only(&loc.db, key, hashing, clock)
        } else {
            Core::start(&loc.db, key, hashing, clock)?
        };
        core.adopt(conn)?;
        Ok(core)
    }

    /// Create the database and its key file (refusing to overwrite either), audited
    /// `admin.init`.
    pub fn create(loc: &Location, hashing: Hashing, clock: Clock, actor: &Actor) -> Result<Core> {
        let (conn, key) = db::create(loc)?;
        audit::record(
            &conn,
            &actor.entry(AuditEvent::AdminInit, Outcome::Success),
            clock(),
        )?;
        drop(conn);
        Ok(Core::start(&loc.db, key, hashing, clock)?)
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.with_conn(|c, _| f(c))
    }

    /// `f` in one write transaction at the core's time, committed when it succeeds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Connection, &SecretKey, i64) -> Result<T>,
    ) -> Result<T> {
        let now = self.now();
        self.with_conn(|c, key| {
            let tx = db::write_tx(c)?;
            let v = f(&tx, key, now)?;
            tx.commit()?;
            Ok(v)
        })
    }

    /// A change that holds for every organisation, by an actor allowed to make it
    /// (else refused and audited), in one transaction with its audit row.
    pub(crate) fn global_write<T>(
        &self,
        actor: &Actor,
        event: AuditEvent,
        f: impl FnOnce(&Connection, &SecretKey, i64) -> Result<T>,
    ) -> Result<T> {
        if let Err(e) = require_global(actor) {
            self.write(|tx, _, now| {
                audit::record(
                    tx,
                    &actor
                        .entry(event, Outcome::Failure)
                        .reason("insufficient_role"),
                    now,
                )
            })?;
            return Err(e);
        }
        self.write(f)
    }

    /// One action on a user as [`admin::action`] decides it (the methods that use it
    /// answer None, like it, for a user the actor cannot see); None for a user the actor
    /// cannot see (audited by the action already).
    fn user_action<T>(
        &self,
        actor: &Actor,
        event: AuditEvent,
        name: &str,
        act: impl FnOnce(&Connection, &SecretKey, &mut User, i64) -> Result<(T, serde_json::Value)>,
    ) -> Result<Option<(User, T)>> {
        let now = self.now();
        self.with_conn(|c, key| {
            admin::action(c, actor, event, name, now, |tx, u| act(tx, key, u, now))
        })
    }

    /// Record a refused command (its own transaction: the refusal changed nothing).
    pub fn audit_refusal(
        &self,
        actor: &Actor,
        event: AuditEvent,
        target: &str,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        self.write(|tx, _, now| {
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Failure)
                    .username(target)
                    .reason(reason)
                    .detail(actor.detail(json!({"message": message}))),
                now,
            )?;
            Ok(())
        })
    }

    // ---- reads ----

    /// The policy in force.
    pub fn policy(&self) -> Result<Policy> {
        self.read(Policy::load)
    }

    /// The password rules of user `user_id`'s next password: with a second factor (or one
    /// the account must enrol) the shorter minimum applies.
    pub fn password_rules_of(&self, user_id: i64) -> Result<crate::password::PasswordPolicy> {
        self.read(|c| {
            let policy = Policy::load(c)?;
            let user = crate::store::users::by_id(c, user_id)?;
            crate::login::password_policy_for(c, &user, &policy)
        })
    }

    /// Every policy setting with its value and default.
    pub fn policy_entries(&self) -> Result<Vec<policy::Entry>> {
        self.read(policy::entries)
    }

    /// A user `actor` may see, or `NotFound` (not audited: a read).
    pub fn user(&self, actor: &Actor, name: &str) -> Result<User> {
        self.read(|c| visible(c, actor, name))
    }

    /// Whether a user of that name exists.
    pub fn user_exists(&self, name: &str) -> Result<bool> {
        self.read(|c| Ok(users::find(c, name)?.is_some()))
    }

    /// Whether an organisation of that name exists.
    pub fn org_exists(&self, name: &str) -> Result<bool> {
        self.read(|c| Ok(orgs::find_org(c, name)?.is_some()))
    }

    /// Whether a group of that name exists.
    pub fn group_exists(&self, name: &str) -> Result<bool> {
        self.read(|c| match orgs::get_group(c, name) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// The users `actor` may see that match `q`.
    pub fn users(&self, actor: &Actor, q: &UserQuery) -> Result<Vec<User>> {
        self.read(|c| {
            let org_id = q
                .org
                .as_deref()
                .map(|o| orgs::get_org(c, o))
                .transpose()?
                .map(|o| o.id);
            if let (Some(scope), Some(o)) = (actor.org_scope, org_id) {
                if scope != o {
                    return Err(Error::not_found(
                        "organisation",
                        q.org.as_deref().unwrap_or(""),
                    ));
                }
            }
            let group_id = q
                .group
                .as_deref()
                .map(|g| orgs::get_group(c, g))
                .transpose()?
                .map(|g| g.id);
            users::list(
                c,
                &users::ListFilter {
                    org_id: actor.org_scope.or(org_id),
                    locked: q.locked,
                    group_id,
                    limit: None,
                },
            )
        })
    }

    /// One user with their recovery codes left, live sessions and remembered devices.
    pub fn user_overview(&self, actor: &Actor, name: &str) -> Result<UserOverview> {
        let now = self.now();
        self.read(|c| {
            let user = visible(c, actor, name)?;
            Ok(UserOverview {
                totp_apps: factors::list_totp(c, user.id)?
                    .into_iter()
                    .map(TotpAppView::from)
                    .collect(),
                recovery_codes_remaining: factors::remaining_recovery_codes(c, user.id)?,
                sessions: sessions::list(c, Some(user.id), now)?.len(),
                devices: factors::list_devices(c, Some(user.id), now)?.len(),
                user,
            })
        })
    }

    pub fn orgs(&self) -> Result<Vec<Org>> {
        self.read(orgs::list_orgs)
    }

    pub fn groups(&self) -> Result<Vec<Group>> {
        self.read(orgs::list_groups)
    }

    pub fn group(&self, name: &str) -> Result<Group> {
        self.read(|c| orgs::get_group(c, name))
    }

    /// The terms in force, if any.
    pub fn terms(&self) -> Result<Option<Terms>> {
        self.read(terms::current)
    }

    /// Live sessions (of one user `actor` may see).
    pub fn sessions(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<Session>> {
        let now = self.now();
        self.read(|c| {
            let uid = user
                .map(|n| visible(c, actor, n))
                .transpose()?
                .map(|u| u.id);
            let list = sessions::list(c, uid, now)?;
            scoped(c, actor, list, |s| s.user_id)
        })
    }

    /// Live remembered devices (of one user `actor` may see).
    pub fn devices(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<Device>> {
        let now = self.now();
        self.read(|c| {
            let uid = user
                .map(|n| visible(c, actor, n))
                .transpose()?
                .map(|u| u.id);
            let list = factors::list_devices(c, uid, now)?;
            scoped(c, actor, list, |d| d.user_id)
        })
    }

    /// The audit rows matching `f` (an actor with an organisation scope sees its rows).
    pub fn audit_query(&self, actor: &Actor, f: &audit::Filter) -> Result<Vec<audit::Row>> {
        let mut f = f.clone();
        if let Some(scope) = actor.org_scope {
            if f.org_id.is_some_and(|o| o != scope) {
                return Ok(Vec::new());
            }
            f.org_id = Some(scope);
        }
        self.read(|c| audit::query(c, &f))
    }

    /// The id of the newest audit row (0 when there is none): where following starts.
    pub fn audit_last_id(&self) -> Result<i64> {
        self.read(audit::last_id)
    }

    /// An organisation's id by name.
    pub fn org_id(&self, name: &str) -> Result<i64> {
        self.read(|c| Ok(orgs::get_org(c, name)?.id))
    }

    // ---- users ----

    /// Create a user (the password checked against the policy and hashed first, outside
    /// the transaction), audited `admin.user.add`.
    pub fn add_user(&self, actor: &Actor, spec: &UserSpec) -> Result<User> {
        // Cheap checks before the slow hash, so a typo fails fast.
        crate::names::normalize("username", spec.username)?;
        crate::names::email(spec.email)?;
        if self.user_exists(spec.username)? {
            return Err(Error::Conflict(format!(
                "user '{}' already exists",
                spec.username.trim()
            )));
        }
        let policy = self.policy()?;
        let hash = spec
            .password
            .map(|p| check_and_hash(self.hashing(), p, &policy.password_least(), &policy))
            .transpose()?;
        let event = AuditEvent::AdminUserAdd;
        self.write(|tx, _, now| {
            let org = orgs::org_or_default(tx, spec.org, now)?;
            if actor.org_scope.is_some_and(|s| s != org.id)
                || (!actor.manages_admins && spec.role != Role::User)
            {
                return Err(Error::Forbidden(
                    "org admins add plain users to their own organisation only".into(),
                ));
            }
            let u = users::create(
                tx,
                &NewUser {
                    username: spec.username,
                    email: spec.email,
                    org: spec.org,
                    groups: spec.groups,
                    role: spec.role,
                    password_hash: hash,
                    must_change_password: spec.must_change_password,
                },
                now,
            )?;
            // The new account's own minimum (with its groups and role) is known now.
            if let Some(p) = spec.password {
                check_rules(&crate::login::password_policy_for(tx, &u, &policy)?, p)?;
            }
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .username(&u.username)
                    .user(u.id, u.org_id),
                now,
            )?;
            Ok(u)
        })
    }

    /// Change a user's email, organisation, role or groups, audited `admin.user.set` with
    /// the changes. Org admins keep users plain and in their organisation.
    pub fn set_user(&self, actor: &Actor, name: &str, ch: &UserChanges) -> Result<Option<User>> {
        if ch.is_empty() {
            return Err(Error::Invalid(
                "nothing to change: give --email, --org, --role, --add-group or --remove-group"
                    .into(),
            ));
        }
        let done = self.user_action(actor, AuditEvent::AdminUserSet, name, |tx, _, u, now| {
            let mut changes = serde_json::Map::new();
            if let Some(e) = &ch.email {
                users::set_email(tx, u.id, e, now)?;
                changes.insert("email".into(), json!(e));
            }
            if let Some(o) = &ch.org {
                if let Some(scope) = actor.org_scope {
                    if orgs::get_org(tx, o)?.id != scope {
                        return Err(Error::Forbidden(
                            "org admins keep users in their own organisation".into(),
                        ));
                    }
                }
                users::set_org(tx, u.id, o, now)?;
                changes.insert("org".into(), json!(o));
            }
            if let Some(r) = ch.role {
                if !actor.manages_admins && r != Role::User {
                    return Err(Error::Forbidden(
                        "org admins cannot grant the admin or org-admin role".into(),
                    ));
                }
                users::set_role(tx, u.id, r, now)?;
                changes.insert("role".into(), json!(r.as_str()));
            }
            for g in &ch.add_groups {
                users::add_to_group(tx, u.id, g)?;
            }
            for g in &ch.remove_groups {
                users::remove_from_group(tx, u.id, g)?;
            }
            if !ch.add_groups.is_empty() {
                changes.insert("add_groups".into(), json!(ch.add_groups));
            }
            if !ch.remove_groups.is_empty() {
                changes.insert("remove_groups".into(), json!(ch.remove_groups));
            }
            *u = users::by_id(tx, u.id)?;
            Ok(((), json!({ "changes": changes })))
        })?;
        Ok(done.map(|(u, ())| u))
    }

    /// Disable (no login; sessions and remembered devices end) or enable a user, audited
    /// `admin.user.disable` / `admin.user.enable`; the user after the change.
    pub fn set_disabled(&self, actor: &Actor, name: &str, disabled: bool) -> Result<Option<User>> {
        let event = if disabled {
            AuditEvent::AdminUserDisable
        } else {
            AuditEvent::AdminUserEnable
        };
        let done = self.user_action(actor, event, name, |tx, _, u, now| {
            users::set_disabled(tx, u.id, disabled, now)?;
            Ok((users::by_id(tx, u.id)?, json!({})))
        })?;
        Ok(done.map(|(_, after)| after))
    }

    /// Delete a user and everything attached, audited `admin.user.delete`.
    pub fn delete_user(&self, actor: &Actor, name: &str) -> Result<Option<User>> {
        let done = self.user_action(actor, AuditEvent::AdminUserDelete, name, |tx, _, u, _| {
            users::delete(tx, u.id)?;
            Ok(((), json!({})))
        })?;
        Ok(done.map(|(u, ())| u))
    }

    /// Set a user's password (checked against the policy, and different from the current
    /// one) or force a change at the next login, audited `admin.passwd` /
    /// `admin.passwd.expire`.
    pub fn set_password(
        &self,
        actor: &Actor,
        name: &str,
        change: PasswordChange,
    ) -> Result<Option<User>> {
        let current = self.user(actor, name)?;
        let (hash, expire) = match change {
            PasswordChange::Set { password, expire } => {
                let policy = self.policy()?;
                let rules = self.with_conn(|conn, _| {
                    crate::login::password_policy_for(conn, &current, &policy)
                })?;
                let hash = check_and_hash(self.hashing(), password, &rules, &policy)?;
                if let Some(old) = &current.password_hash {
                    if crate::password::verify_password(self.hashing(), password, old) {
                        return Err(Error::Policy {
                            message: "the new password must differ from the current one".into(),
                            rules: vec![],
                        });
                    }
                }
                (Some(hash), expire)
            }
            PasswordChange::Expire => (None, true),
        };
        let event = if hash.is_some() {
            AuditEvent::AdminPasswd
        } else {
            AuditEvent::AdminPasswdExpire
        };
        let done = self.user_action(actor, event, name, |tx, _, u, now| {
            match &hash {
                Some(h) => users::set_password(tx, u.id, h, expire, now)?,
                None => users::expire_password(tx, u.id, now)?,
            }
            Ok(((), json!({ "expire": expire })))
        })?;
        Ok(done.map(|(u, ())| u))
    }

    // ---- second factors ----

    /// A new second factor for `name` (a fresh TOTP secret and its otpauth URI, or the
    /// emailed codes): nothing is stored until [`Core::enroll`].
    pub fn prepare_enrollment(
        &self,
        actor: &Actor,
        name: &str,
        method: MfaMethod,
    ) -> Result<Enrollment> {
        let u = self.user(actor, name)?;
        if method == MfaMethod::Email && !self.policy()?.mfa_email_enrolment {
            return Err(Error::Policy {
                message: "emailed codes are not accepted for new second-factor enrolments here (mfa.email_enrolment=false): use --method totp".into(),
                rules: Vec::new(),
            });
        }
        let (secret, otpauth_uri) = match method {
            MfaMethod::Totp => {
                let issuer = self.policy()?.totp_issuer;
                let s = totp::generate_secret();
                let uri = totp::otpauth_uri(&issuer, &u.username, &s)
                    .map_err(|e| Error::Invalid(format!("cannot build the otpauth URI: {e}")))?;
                (Some(s), Some(uri))
            }
            _ => (None, None),
        };
        Ok(Enrollment {
            user_id: u.id,
            method,
            secret,
            otpauth_uri,
        })
    }

    /// Store a prepared second factor and fresh recovery codes, audited `admin.enroll`
    /// with the method and the one it replaced.
    pub fn enroll(&self, actor: &Actor, name: &str, e: &Enrollment) -> Result<Option<Enrolled>> {
        let count = self.policy()?.recovery_count;
        let done = self.user_action(actor, AuditEvent::AdminEnroll, name, |tx, key, u, now| {
            if u.id != e.user_id {
                return Err(Error::Conflict(format!(
                    "user '{name}' changed meanwhile; nothing was changed: run the command again"
                )));
            }
            match &e.secret {
                Some(s) => factors::set_totp(tx, key, u.id, s, Some(now), now)?,
                None => {
                    factors::remove_totp(tx, u.id)?;
                }
            }
            users::set_mfa_method(tx, u.id, Some(e.method), now)?;
            crate::store::email::notify(tx, u.id, crate::store::email::notice::FACTOR_ADDED, now)?;
            let codes = factors::rotate_recovery_codes(tx, key, u.id, count, now)?;
            Ok((codes, json!({"method": e.method, "replaced": u.mfa_method})))
        })?;
        Ok(done.map(|(user, recovery_codes)| Enrolled {
            user,
            recovery_codes,
        }))
    }

    /// Does `code` match `name`'s authenticator now, and at which step offset (clock-drift
    /// diagnosis)? Consumes nothing; audited `admin.totp.test`.
    pub fn totp_test(&self, actor: &Actor, name: &str, code: &str) -> Result<TotpDiagnosis> {
        let policy = self.policy()?;
        self.write(|tx, key, now| {
            let u = visible(tx, actor, name)?;
            let apps: Vec<_> = factors::get_totp(tx, key, u.id)?
                .into_iter()
                .filter(|a| a.confirmed_at.is_some())
                .collect();
            if apps.is_empty() {
                return Err(Error::NotFound(format!(
                    "user '{}' has no authenticator enrolled",
                    u.username
                )));
            }
            let trimmed = code.trim();
            if trimmed.len() != totp::DIGITS || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Invalid(format!(
                    "'{}' is not a 6-digit code",
                    code.escape_debug()
                )));
            }
            // The user's replay state is the highest step accepted on any app.
            let last_step = apps.iter().filter_map(|a| a.last_step).max();
            let (app, found) = apps
                .iter()
                .filter_map(|a| {
                    totp::find_offset(&a.secret, trimmed, now, DIAGNOSIS_WINDOW)
                        .map(|m| (a.name.clone(), m))
                })
                .min_by_key(|(_, m)| m.offset.abs())
                .unzip();
            let matched = found.is_some_and(|m| m.offset.abs() <= policy.totp_skew);
            let replayed = found.is_some_and(|m| last_step.is_some_and(|l| m.step <= l));
            audit::record(
                tx,
                &actor
                    .entry(AuditEvent::AdminTotpTest, Outcome::Success)
                    .username(&u.username)
                    .user(u.id, u.org_id)
                    .detail(actor.detail(
                        json!({"match": matched, "offset": found.map(|m| m.offset), "app": app}),
                    )),
                now,
            )?;
            Ok(TotpDiagnosis {
                username: u.username,
                app,
                matched,
                offset: found.map(|m| m.offset),
                step: found.map(|m| m.step),
                already_used: replayed,
                accepted_window: policy.totp_skew,
            })
        })
    }

    /// Revoke one remembered device, or all of a user's, audited `admin.device.revoke`:
    /// the user's name and how many (None: a user the actor cannot see, audited).
    pub fn revoke_devices(
        &self,
        actor: &Actor,
        target: &Target,
    ) -> Result<Option<(String, usize)>> {
        let owner = match target {
            Target::Id(id) => self
                .devices(actor, None)?
                .into_iter()
                .find(|d| d.id == *id)
                .map(|d| (d.user_id, d.username)),
            Target::User(_) => None,
        };
        self.revoke(
            actor,
            target,
            owner,
            &Revocation {
                event: AuditEvent::AdminDeviceRevoke,
                what: "remembered device",
                one: factors::revoke_device,
                all: factors::revoke_devices,
                one_key: "device",
                all_key: "devices",
            },
        )
    }

    /// End one session, or all of a user's, audited `admin.session.revoke`: the user's
    /// name and how many (None: a user the actor cannot see, audited).
    pub fn revoke_sessions(
        &self,
        actor: &Actor,
        target: &Target,
    ) -> Result<Option<(String, usize)>> {
        let owner = match target {
            Target::Id(id) => self
                .sessions(actor, None)?
                .into_iter()
                .find(|s| s.id == *id)
                .map(|s| (s.user_id, s.username)),
            Target::User(_) => None,
        };
        self.revoke(
            actor,
            target,
            owner,
            &Revocation {
                event: AuditEvent::AdminSessionRevoke,
                what: "session",
                one: sessions::revoke,
                all: sessions::end_all_for_user,
                one_key: "session",
                all_key: "sessions",
            },
        )
    }

    /// Revoke what `target` names as `r` says; `owner` is the live item's user (id, name)
    /// when the target is an id.
    fn revoke(
        &self,
        actor: &Actor,
        target: &Target,
        owner: Option<(i64, String)>,
        r: &Revocation,
    ) -> Result<Option<(String, usize)>> {
        let done = match target {
            Target::User(name) => self.user_action(actor, r.event, name, |tx, _, u, now| {
                let n = (r.all)(tx, u.id, now)?;
                Ok((n, json!({ r.all_key: n })))
            })?,
            Target::Id(id) => {
                let id = *id;
                let missing = || Error::NotFound(format!("no live {} with id {id}", r.what));
                let (uid, name) = owner.ok_or_else(missing)?;
                self.user_action(actor, r.event, &name, |tx, _, u, now| {
                    if u.id != uid || !(r.one)(tx, id, now)? {
                        return Err(missing());
                    }
                    Ok((1, json!({ r.one_key: id })))
                })?
            }
        };
        Ok(done.map(|(u, n)| (u.username, n)))
    }

    // ---- organisations, groups, policy, terms ----

    /// Create an organisation, audited `admin.org.add`.
    pub fn add_org(&self, actor: &Actor, name: &str, mfa: Option<MfaMethod>) -> Result<Org> {
        let event = AuditEvent::AdminOrgAdd;
        self.global_write(actor, event, |tx, _, now| {
            let o = orgs::add_org(tx, name, mfa, now)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .org(Some(o.id))
                    .detail(actor.detail(json!({ "org": o.name }))),
                now,
            )?;
            Ok(o)
        })
    }

    /// Delete an empty organisation, audited `admin.org.delete`.
    pub fn delete_org(&self, actor: &Actor, name: &str) -> Result<Org> {
        let event = AuditEvent::AdminOrgDelete;
        self.global_write(actor, event, |tx, _, now| {
            let o = orgs::delete_org(tx, name)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({ "org": o.name }))),
                now,
            )?;
            Ok(o)
        })
    }

    /// Create a group, audited `admin.group.add`.
    pub fn add_group(&self, actor: &Actor, name: &str, require_2fa: bool) -> Result<Group> {
        let event = AuditEvent::AdminGroupAdd;
        self.global_write(actor, event, |tx, _, now| {
            let g = orgs::add_group(tx, name, require_2fa, now)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"group": g.name, "require_2fa": require_2fa}))),
                now,
            )?;
            Ok(g)
        })
    }

    /// Change whether a group requires a second factor, audited `admin.group.set`.
    pub fn set_group(&self, actor: &Actor, name: &str, require_2fa: bool) -> Result<Group> {
        let event = AuditEvent::AdminGroupSet;
        self.global_write(actor, event, |tx, _, now| {
            let g = orgs::set_group_require_2fa(tx, name, require_2fa)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"group": g.name, "require_2fa": require_2fa}))),
                now,
            )?;
            Ok(g)
        })
    }

    /// Delete a group (its members leave it), audited `admin.group.delete`. `confirmed` is
    /// the group as the operator saw it when they confirmed (None: no confirmation was
    /// asked, `--yes`): when the deletion lifts a second-factor requirement and the group
    /// is not that one any more, nothing changes (`Conflict`).
    pub fn delete_group(
        &self,
        actor: &Actor,
        name: &str,
        confirmed: Option<&Group>,
    ) -> Result<Group> {
        let event = AuditEvent::AdminGroupDelete;
        self.global_write(actor, event, |tx, _, now| {
            let g = orgs::get_group(tx, name)?;
            if let Some(before) = confirmed {
                if lifts_2fa(&g)
                    && (g.id != before.id || g.members != before.members || !lifts_2fa(before))
                {
                    return Err(Error::Conflict(format!(
                        "group {} changed meanwhile (it now requires a second factor for {}); nothing was changed: run the command again",
                        g.name,
                        members(g.members)
                    )));
                }
            }
            let g = orgs::delete_group(tx, &g.name)?;
            audit::record(
                tx,
                &actor.entry(event, Outcome::Success).detail(actor.detail(
                    json!({"group": g.name, "members": g.members, "require_2fa": g.require_2fa}),
                )),
                now,
            )?;
            Ok(g)
        })
    }

    /// Change policy settings, all or nothing (each validated before anything is
    /// written), audited `admin.policy.set` with each previous value: the values stored.
    pub fn set_policy(&self, actor: &Actor, settings: &[(String, String)]) -> Result<Settings> {
        let pairs = settings
            .iter()
            .map(|(k, v)| {
                let k = k.trim();
                Ok((k.to_string(), policy::validate(k, v)?))
            })
            .collect::<Result<Settings>>()?;
        let event = AuditEvent::AdminPolicySet;
        self.global_write(actor, event, |tx, _, now| {
            let mut changed = Vec::new();
            for (k, v) in &pairs {
                let before = policy::get(tx, k)?;
                let value = policy::set(tx, k, v, now)?;
                changed.push(json!({"key": k, "value": value, "previous": before}));
            }
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({ "changes": changed }))),
                now,
            )?;
            Ok(())
        })?;
        Ok(pairs)
    }

    /// What applying the preset `name` would change: (key, current value, preset value,
    /// why) for each setting it names.
    pub fn preset_changes(&self, name: &str) -> Result<Vec<(policy::PresetSetting, String)>> {
        let p = policy::preset(name)?;
        self.read(|c| {
            p.settings
                .iter()
                .map(|s| Ok((*s, policy::get(c, s.key)?)))
                .collect()
        })
    }

    /// Apply the preset `name` (every setting in one transaction, audited
    /// `admin.policy.set` like `set_policy`); returns the settings it set.
    pub fn apply_preset(&self, actor: &Actor, name: &str) -> Result<Settings> {
        let p = policy::preset(name)?;
        let pairs: Settings = p
            .settings
            .iter()
            .map(|s| (s.key.to_string(), s.value.to_string()))
            .collect();
        self.set_policy(actor, &pairs)
    }

    /// Publish a terms version, audited `admin.terms.set`: the terms and the `terms.mode`
    /// in force.
    pub fn set_terms(&self, actor: &Actor, version: &str, text: &str) -> Result<(Terms, String)> {
        let event = AuditEvent::AdminTermsSet;
        self.global_write(actor, event, |tx, _, now| {
            let t = terms::set(tx, version, text, now)?;
            let mode = policy::get(tx, "terms.mode")?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"version": t.version, "bytes": text.len()}))),
                now,
            )?;
            Ok((t, mode))
        })
    }

    /// A one-time link for `name` to set a password (`enrol`: and to set up the account),
    /// valid `ttl` seconds, audited `admin.reset_link` (without the token). None for a
    /// user the actor cannot see. The token is returned once; only its hash is kept.
    pub fn issue_reset_link(
        &self,
        actor: &Actor,
        name: &str,
        ttl: i64,
        enrol: bool,
    ) -> Result<Option<(User, (String, i64))>> {
        self.user_action(actor, AuditEvent::AdminResetLink, name, |tx, _, u, now| {
            if u.disabled {
                return Err(Error::Conflict(format!(
                    "{} is disabled: enable the account first",
                    u.username
                )));
            }
            let token = crate::reset_link::issue(tx, u.id, ttl, enrol, now)?;
            Ok((
                (token, now + ttl),
                json!({"ttl_seconds": ttl, "enrol": enrol}),
            ))
        })
    }

    /// Set the list of security questions users pick from (and decoys are drawn from),
    /// audited `admin.questions.set`.
    pub fn set_question_list(&self, actor: &Actor, list: &[String]) -> Result<Vec<String>> {
        let event = AuditEvent::AdminQuestionsSet;
        self.global_write(actor, event, |tx, _, now| {
            let stored = crate::forgot::set_question_list(tx, list)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"count": stored.len()}))),
                now,
            )?;
            Ok(stored)
        })
    }

    // ---- import ----

    /// Create a batch of checked, hashed users in one transaction: each user with its
    /// `admin.user.add` row (via `authctl import` and its line), a user that cannot be
    /// created is skipped with its line and error, and the batch is summed up in one
    /// `admin.import` row (`file`, `imported`, `failed` counting `failed_before`, the
    /// lines refused earlier). Returns the number created and the lines that failed.
    pub fn import_users(
        &self,
        actor: &Actor,
        batch: Vec<ImportUser>,
        file: &str,
        failed_before: usize,
    ) -> Result<(usize, Vec<(usize, String)>)> {
        require_global(actor)?;
        let now = self.now();
        let add = AuditEvent::AdminUserAdd;
        self.with_conn(|c, _| {
            let mut tx = db::write_tx(c)?;
            let mut imported = 0usize;
            let mut failed = Vec::new();
            for v in batch {
                let sp = tx.savepoint()?;
                let created = users::create(&sp, &v.user, now);
                match created {
                    Ok(u) => {
                        audit::record(
                            &sp,
                            &actor
                                .entry(add, Outcome::Success)
                                .username(&u.username)
                                .user(u.id, u.org_id)
                                .detail(json!({"via": "authctl import", "line": v.line})),
                            now,
                        )?;
                        sp.commit()?;
                        imported += 1;
                    }
                    Err(e) => failed.push((v.line, e.to_string())),
                }
            }
            audit::record(
                &tx,
                &actor
                    .entry(AuditEvent::AdminImport, Outcome::Success)
                    .detail(actor.detail(json!({"file": file, "imported": imported,
                        "failed": failed_before + failed.len()}))),
                now,
            )?;
            tx.commit()?;
            Ok((imported, failed))
        })
    }
}

/// Whether deleting `g` lifts a second-factor requirement from someone.
pub fn lifts_2fa(g: &Group) -> bool {
    g.require_2fa && g.members > 0
}

/// "1 member", "3 members".
pub fn members(n: i64) -> String {
    if n == 1 {
        "1 member".into()
    } else {
        format!("{n} members")
    }
}

/// A user `actor` may see: another organisation's user is as missing as a user that does
/// not exist.
fn visible(c: &Connection, actor: &Actor, name: &str) -> Result<User> {
    users::find(c, name)?
        .filter(|u| actor.org_scope.is_none_or(|o| u.org_id == o))
        .ok_or_else(|| Error::not_found("user", name))
}

/// `list` without the rows of users outside `actor`'s organisation.
fn scoped<T>(
    c: &Connection,
    actor: &Actor,
    list: Vec<T>,
    user_id: impl Fn(&T) -> i64,
) -> Result<Vec<T>> {
    let Some(scope) = actor.org_scope else {
        return Ok(list);
    };
    let mut out = Vec::new();
    for item in list {
        if users::by_id(c, user_id(&item))?.org_id == scope {
            out.push(item);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::org_admin;
    use std::sync::Arc;

    const T: i64 = 1_700_000_000;

    fn core(dir: &std::path::Path) -> Core {
        let loc = Location::new(dir.join("a.db"), None);
        Core::create(
            &loc,
            Hashing::new(1),
            Arc::new(|| T),
            &Actor::operator("root"),
        )
        .unwrap()
    }

    fn add(core: &Core, name: &str, org: &str, role: Role) -> User {
        let op = Actor::operator("root");
        if !core.org_exists(org).unwrap() {
            core.add_org(&op, org, None).unwrap();
        }
        core.add_user(
            &op,
            &UserSpec {
                username: name,
                email: "x@example.org",
                org: Some(org),
                groups: &[],
                role,
                password: None,
                must_change_password: false,
            },
        )
        .unwrap()
    }

    fn rows(core: &Core) -> Vec<audit::Row> {
        core.audit_query(&Actor::operator("root"), &audit::Filter::default())
            .unwrap()
    }

    #[test]
    fn an_org_admin_cannot_grant_roles_or_move_users_and_the_refusal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let boss = add(&core, "boss", "school", Role::OrgAdmin);
        add(&core, "pupil", "school", Role::User);
        add(&core, "stranger", "other", Role::User);
        let actor = org_admin(&boss);
        for ch in [
            UserChanges {
                email: Some("new@example.org".into()),
                role: Some(Role::Admin),
                ..Default::default()
            },
            UserChanges {
                email: Some("new@example.org".into()),
                org: Some("other".into()),
                ..Default::default()
            },
        ] {
            let before = rows(&core).len();
            assert!(matches!(
                core.set_user(&actor, "pupil", &ch),
                Err(Error::Forbidden(_))
            ));
            let u = core.user(&Actor::operator("root"), "pupil").unwrap();
            assert_eq!(
                (u.email.as_str(), u.role, u.org.as_str()),
                ("x@example.org", Role::User, "school"),
                "a refused change changed something"
            );
            let all = rows(&core);
            assert_eq!(all.len(), before + 1, "one row for the refusal");
            assert_eq!(
                (
                    all[0].event,
                    all[0].outcome.as_str(),
                    all[0].reason.as_str()
                ),
                (AuditEvent::AdminUserSet, "failure", "insufficient_role")
            );
        }
        // Their own organisation's plain users they do manage, audited with the change.
        let ch = UserChanges {
            email: Some("new@example.org".into()),
            ..Default::default()
        };
        let u = core.set_user(&actor, "pupil", &ch).unwrap().unwrap();
        assert_eq!(u.email, "new@example.org");
        let row = &rows(&core)[0];
        assert_eq!((row.outcome.as_str(), row.at), ("success", T));
        assert!(row.detail.contains("new@example.org"), "{}", row.detail);
        // Another organisation's user is missing to them (audited by the action).
        assert!(core.set_user(&actor, "stranger", &ch).unwrap().is_none());
        assert_eq!(rows(&core)[0].reason, "other_org");
        assert!(core
            .set_disabled(&actor, "stranger", true)
            .unwrap()
            .is_none());
        assert!(
            !core
                .user(&Actor::operator("root"), "stranger")
                .unwrap()
                .disabled
        );
        assert!(matches!(
            core.user(&actor, "stranger"),
            Err(Error::NotFound(_))
        ));
        let names: Vec<String> = core
            .users(&actor, &UserQuery::default())
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!names.contains(&"stranger".to_string()));
    }

    #[test]
    fn settings_for_every_organisation_are_refused_to_org_admins_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let boss = add(&core, "boss", "school", Role::OrgAdmin);
        let actor = org_admin(&boss);
        let before = rows(&core).len();
        assert!(matches!(
            core.add_group(&actor, "g", true),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            core.set_policy(&actor, &[("lockout.max_failures".into(), "3".into())]),
            Err(Error::Forbidden(_))
        ));
        assert!(!core.group_exists("g").unwrap());
        assert_eq!(core.policy().unwrap().lockout_max_failures, 9);
        let all = rows(&core);
        assert_eq!(all.len(), before + 2);
        assert!(all[..2]
            .iter()
            .all(|r| r.outcome == "failure" && r.reason == "insufficient_role"));
    }

    #[test]
    fn a_policy_change_and_its_row_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let op = Actor::operator("root");
        let before = rows(&core).len();
        let bad = [
            ("lockout.max_failures".to_string(), "5".to_string()),
            ("totp.skew".to_string(), "99".to_string()),
        ];
        assert!(core.set_policy(&op, &bad).is_err());
        assert_eq!(
            core.policy().unwrap().lockout_max_failures,
            9,
            "half a change"
        );
        assert_eq!(rows(&core).len(), before, "a row for nothing");
        let set = core.set_policy(&op, &bad[..1]).unwrap();
        assert_eq!(set, vec![("lockout.max_failures".into(), "5".into())]);
        assert_eq!(core.policy().unwrap().lockout_max_failures, 5);
        let row = &rows(&core)[0];
        assert_eq!((row.event, row.at), (AuditEvent::AdminPolicySet, T));
        let d: serde_json::Value = serde_json::from_str(&row.detail).unwrap();
        assert_eq!(d["changes"][0]["previous"], "9", "{d}");
        assert_eq!(d["via"], "authctl");
    }

    #[test]
    fn a_group_is_deleted_only_as_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let op = Actor::operator("root");
        let seen = core.add_group(&op, "staff", false).unwrap();
        core.set_group(&op, "staff", true).unwrap();
        add(&core, "pupil", "school", Role::User);
        core.set_user(
            &op,
            "pupil",
            &UserChanges {
                add_groups: vec!["staff".into()],
                ..Default::default()
            },
        )
        .unwrap();
        // Confirmed when it lifted nothing; it now lifts the requirement from a member.
        assert!(matches!(
            core.delete_group(&op, "staff", Some(&seen)),
            Err(Error::Conflict(_))
        ));
        assert!(core.group_exists("staff").unwrap());
        let now_seen = core.group("staff").unwrap();
        let g = core.delete_group(&op, "staff", Some(&now_seen)).unwrap();
        assert_eq!((g.members, g.require_2fa), (1, true));
        assert!(!core.group_exists("staff").unwrap());
        assert_eq!(rows(&core)[0].event, AuditEvent::AdminGroupDelete);
    }

    #[test]
    fn an_import_batch_writes_each_user_with_its_row_and_one_summary() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let op = Actor::operator("root");
        add(&core, "taken", "school", Role::User);
        let user = |line, username| ImportUser {
            line,
            user: NewUser {
                username,
                email: "i@example.org",
                org: None,
                groups: &[],
                role: Role::User,
                password_hash: None,
                must_change_password: false,
            },
        };
        let (n, failed) = core
            .import_users(
                &op,
                vec![user(1, "ann"), user(2, "taken"), user(4, "bob")],
                "f.jsonl",
                1,
            )
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 2);
        assert!(core.user_exists("ann").unwrap() && core.user_exists("bob").unwrap());
        let all = rows(&core);
        assert_eq!(all[0].event, AuditEvent::AdminImport);
        let d: serde_json::Value = serde_json::from_str(&all[0].detail).unwrap();
        assert_eq!(
            (d["imported"].as_i64(), d["failed"].as_i64()),
            (Some(2), Some(2))
        );
        assert_eq!(
            all[1..3]
                .iter()
                .filter(|r| r.event == AuditEvent::AdminUserAdd && r.detail.contains("import"))
                .count(),
            2
        );
        // Not for org admins.
        let boss = add(&core, "boss", "school", Role::OrgAdmin);
        assert!(matches!(
            core.import_users(&org_admin(&boss), vec![user(1, "eve")], "f", 0),
            Err(Error::Forbidden(_))
        ));
        assert!(!core.user_exists("eve").unwrap());
    }

    #[test]
    fn a_refusal_is_recorded_at_the_cores_time() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let op = Actor::operator("root");
        core.audit_refusal(
            &op,
            AuditEvent::AdminUserAdd,
            "eve",
            "policy_rejected",
            "weak",
        )
        .unwrap();
        let row = &rows(&core)[0];
        assert_eq!(
            (row.event, row.outcome.as_str(), row.reason.as_str(), row.at),
            (AuditEvent::AdminUserAdd, "failure", "policy_rejected", T)
        );
        assert_eq!(row.username, "eve");
        assert_eq!(row.actor, "root");
    }
}
