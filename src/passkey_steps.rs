//! The passkey ceremonies ([`crate::passkey`]) as methods of [`Core`], for the API, the
//! portal and authctl: each reads the core's clock and runs on a pooled connection
//! (blocking; a signature check, no hashing). Without a relying party (authd started
//! with no `--public-url` / `--webauthn-rp-id`), every ceremony is refused as bad input
//! that says so, and logins never offer "passkey".

use std::sync::Arc;

use serde_json::{json, Value};

use crate::admin::{self, Actor};
use crate::audit::{self, Outcome};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::kinds::AuditEvent;
use crate::login::{Client, Decision, Status};
use crate::passkey::{self, PasskeyView, Registered, RelyingParty};
use crate::store::users::User;
use crate::store::{orgs, passkeys};

impl Core {
    fn rp(&self) -> Result<Arc<RelyingParty>> {
        self.relying_party().ok_or_else(|| {
            Error::Invalid(
                "passkeys are not enabled on this server (authd needs --public-url, or --webauthn-rp-id and --webauthn-origin)"
                    .into(),
            )
        })
    }

    /// A registration challenge for a signed-in user, bound to their session:
    /// `{"publicKey":{…}}`.
    pub fn passkey_register_options(
        &self,
        client: &Client,
        user_id: i64,
        session_id: i64,
    ) -> Result<Value> {
        let rp = self.rp()?;
        let now = self.now();
        self.with_conn(|conn, _| {
            passkey::register_options(conn, &rp, client, user_id, session_id, now)
        })
    }

    /// Register the credential answering the session's challenge, named `name`.
    pub fn passkey_register(
        &self,
        client: &Client,
        user_id: i64,
        session_id: i64,
        name: &str,
        credential: &Value,
    ) -> Result<Registered> {
        let rp = self.rp()?;
        let now = self.now();
        self.with_conn(|conn, _| {
            passkey::register(
                conn, &rp, client, user_id, session_id, name, credential, now,
            )
        })
    }

    /// A user's passkeys.
    pub fn passkeys(&self, user_id: i64) -> Result<Vec<PasskeyView>> {
        self.with_conn(|conn, _| passkey::list(conn, user_id))
    }

    /// Rename one of the user's own passkeys.
    pub fn passkey_rename(
        &self,
        client: &Client,
        user_id: i64,
        id: i64,
        name: &str,
    ) -> Result<Registered> {
        let now = self.now();
        self.with_conn(|conn, _| passkey::rename(conn, client, user_id, id, name, now))
    }

    /// Remove one of the user's own passkeys.
    pub fn passkey_remove(&self, client: &Client, user_id: i64, id: i64) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| passkey::remove(conn, client, user_id, id, now))
    }

    /// `POST /v1/login/passkey/options`: without a flow, a passwordless challenge
    /// `{"flow","publicKey"}`; with a second-factor flow, a fresh challenge for it
    /// `{"publicKey"}`.
    pub fn passkey_login_options(
        &self,
        client: &Client,
        flow: Option<&str>,
    ) -> Result<Decision<Value>> {
        let rp = self.rp()?;
        let now = self.now();
        self.with_conn(|conn, _| match flow {
            Some(f) => passkey::second_factor_reissue(conn, &rp, client, f, now),
            None => {
                let (flow, options) = passkey::passwordless_options(conn, &rp, client, now)?;
                Ok(Decision::ok(
                    json!({"flow": flow, "publicKey": options["publicKey"]}),
                ))
            }
        })
    }

    /// `POST /v1/login/passkey`: a second factor or a passwordless sign-in.
    pub fn passkey_login_step(
        &self,
        client: &Client,
        flow: &str,
        credential: &Value,
        remember_device: bool,
    ) -> Result<Decision<Status>> {
        let rp = self.rp()?;
        let now = self.now();
        self.with_conn(|conn, key| {
            let d = passkey::login_step(
                conn,
                &rp,
                key,
                client,
                flow,
                credential,
                remember_device,
                now,
            )?;
            passkey::decorate(conn, Some(&rp), client, d, now)
        })
    }

    /// `POST /v1/login/enroll {"flow","method":"passkey"}`.
    pub fn passkey_enroll_step(&self, client: &Client, flow: &str) -> Result<Decision<Value>> {
        let rp = self.rp()?;
        let now = self.now();
        self.with_conn(|conn, key| passkey::enroll_options(conn, &rp, key, client, flow, now))
    }

    /// `POST /v1/login/enroll/confirm {"flow","credential"}`.
    pub fn passkey_enroll_confirm_step(
        &self,
        client: &Client,
        flow: &str,
        credential: &Value,
    ) -> Result<Decision<Status>> {
        let rp = self.rp()?;
        let now = self.now();
        self.with_conn(|conn, key| {
            passkey::enroll_confirm(conn, &rp, key, client, flow, credential, now)
        })
    }

    /// `authctl passkey list NAME`: the user's passkeys (audited `admin.passkey.list`);
    /// None when there is no such user (for this actor).
    pub fn admin_passkeys(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<Option<(User, Vec<PasskeyView>)>> {
        let now = self.now();
        self.with_conn(|conn, _| {
            admin::action(
                conn,
                actor,
                AuditEvent::AdminPasskeyList,
                name,
                now,
                |tx, u| {
                    let list = passkey::list(tx, u.id)?;
                    let n = list.len();
                    Ok((list, json!({"passkeys": n})))
                },
            )
        })
    }

    /// `authctl passkey remove NAME ID` (audited `admin.passkey.remove`); None when there
    /// is no such user, NotFound when the user has no passkey `id`.
    pub fn admin_passkey_remove(
        &self,
        actor: &Actor,
        name: &str,
        id: i64,
    ) -> Result<Option<(User, ())>> {
        let now = self.now();
        self.with_conn(|conn, _| {
            admin::action(
                conn,
                actor,
                AuditEvent::AdminPasskeyRemove,
                name,
                now,
                |tx, u| {
                    if !passkeys::remove(tx, u.id, id)? {
                        return Err(Error::NotFound(format!(
                            "{} has no passkey {id} (authctl passkey list {} shows them)",
                            u.username, u.username
                        )));
                    }
                    Ok(((), json!({"passkey_id": id})))
                },
            )
        })
    }

    /// Make a group require a passkey (`authctl group add|set --require-passkey`),
    /// audited `admin.group.set`; its members' TOTP and emailed codes are refused when
    /// `mfa.passkey_required = groups`.
    pub fn set_group_require_passkey(&self, actor: &Actor, name: &str, on: bool) -> Result<()> {
        let event = AuditEvent::AdminGroupSet;
        self.global_write(actor, event, |tx, _, now| {
            let g = orgs::get_group(tx, name)?;
            passkeys::set_group_requires_passkey(tx, g.id, on)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"group": g.name, "require_passkey": on}))),
                now,
            )?;
            Ok(())
        })
    }

    /// Whether a group requires a passkey.
    pub fn group_requires_passkey(&self, name: &str) -> Result<bool> {
        self.with_conn(|conn, _| {
            let g = orgs::get_group(conn, name)?;
            passkeys::group_requires(conn, g.id)
        })
    }
}
