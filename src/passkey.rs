//! Passkeys (WebAuthn, with webauthn-rs): the relying party, and every ceremony —
//! registration by a signed-in user, enrolment inside a login flow, the second factor
//! of a login, and passwordless sign-in.
//!
//! ```text
//!  options ──▶ challenge state stored (passkey_ceremonies), bound to the login flow,
//!              the session, or (passwordless) its own flow token; 5 minutes
//!  credential ──▶ the ceremony is taken (deleted) first: single use, whatever follows
//!              ├─ none / expired / another flow's ──▶ refused (counted when the user is known)
//!              ├─ webauthn-rs refuses (origin, RP ID, challenge, signature, UV) ──▶ refused, counted
//!              ├─ a credential of another user ──▶ refused, counted
//!              ├─ sign count went backwards ──▶ refused, counted, passkey.clone_suspected
//!              └─ ok ──▶ counters, flags and last use stored; the login goes on
//! ```
//!
//! A failed assertion counts toward lockout exactly like a wrong code
//! ([`login::factor_failure`]). A passwordless sign-in with a user-verified passkey
//! continues the login as a remembered device does: terms and an expired password still
//! come, a second factor never. Nothing here is secret at rest: a passkey row holds the
//! public key and counters only.

use crate::sql::Connection;
use serde::Serialize;
use serde_json::{json, Value};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use crate::audit::{self, Outcome};
use crate::crypto::{self, SecretKey};
use crate::db;
use crate::error::{Error, Result};
use crate::kinds::{AuditEvent, LoginStep};
use crate::lockout;
use crate::login::{self, entry, Client, Decision, FlowState, Status};
use crate::policy::Policy;
use crate::store::passkeys::{self, Binding, CeremonyKind, NewPasskey, PasskeyRow};
use crate::store::{factors, familiar, sessions, users};

/// How long a challenge lives, by default (seconds).
pub const DEFAULT_CHALLENGE_SECS: u64 = 300;

/// The relying party: its ID, the origins it accepts, and how long a challenge lives.
pub struct RelyingParty {
    webauthn: Webauthn,
    rp_id: String,
    origins: Vec<Url>,
    challenge_secs: i64,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("rp_id", &self.rp_id)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

fn is_localhost(u: &Url) -> bool {
    u.host_str() == Some("localhost")
}

impl RelyingParty {
    /// The relying party `rp_id` accepting `origins` (at least one). An origin must be
    /// `https://`, except `http://localhost` (any port); `rp_id` must be the origins'
    /// host or a registrable suffix of it.
    pub fn new(
        rp_id: &str,
        origins: &[String],
        challenge_secs: u64,
    ) -> std::result::Result<RelyingParty, String> {
        let mut parsed = Vec::new();
        for o in origins {
            let u = Url::parse(o).map_err(|e| format!("webauthn origin {o:?}: {e}"))?;
            let ok = u.scheme() == "https" || (u.scheme() == "http" && is_localhost(&u));
            if !ok {
                return Err(format!(
                    "webauthn origin {o:?} must be https:// (plain http only for localhost): passkeys are refused on insecure origins"
                ));
            }
            if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
                return Err(format!(
                    "webauthn origin {o:?} must be an origin (scheme://host[:port]), without a path"
                ));
            }
            parsed.push(u);
        }
        let Some(first) = parsed.first() else {
            return Err("passkeys need at least one origin".into());
        };
        if challenge_secs == 0 || challenge_secs > 3600 {
            return Err("the passkey challenge lifetime must be 1 to 3600 seconds".into());
        }
        let mut b = WebauthnBuilder::new(rp_id, first)
            .map_err(|e| format!("webauthn relying party {rp_id:?} for {first}: {e}"))?
            .rp_name("authd")
            .timeout(std::time::Duration::from_secs(challenge_secs))
            .allow_any_port(parsed.iter().all(is_localhost));
        for o in &parsed[1..] {
            b = b.append_allowed_origin(o);
        }
        let webauthn = b
            .build()
            .map_err(|e| format!("webauthn relying party {rp_id:?}: {e}"))?;
        Ok(RelyingParty {
            webauthn,
            rp_id: rp_id.to_string(),
            origins: parsed,
            challenge_secs: challenge_secs as i64,
        })
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    pub fn origins(&self) -> &[Url] {
        &self.origins
    }
}

/// A passkey as the user and admins see it (`GET /v1/me/passkeys`, `authctl passkey list`).
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyView {
    pub id: i64,
    pub name: String,
    pub aaguid: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub user_verified: bool,
}

impl From<&PasskeyRow> for PasskeyView {
    fn from(p: &PasskeyRow) -> PasskeyView {
        PasskeyView {
            id: p.id,
            name: p.name.clone(),
            aaguid: p.aaguid.clone(),
            created_at: crate::util::rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(crate::util::rfc3339),
            sign_count: p.sign_count,
            backup_eligible: p.backup_eligible,
            backed_up: p.backed_up,
            user_verified: p.user_verified,
        }
    }
}

/// A registered passkey's answer: `{"id","name"}`.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub id: i64,
    pub name: String,
}

fn b64url(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Io(format!("passkey state: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Io(format!("passkey state: {e}")))
}

/// The browser's `credential.toJSON()`; anything else is bad input (400, not counted).
fn parse_credential<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| {
        Error::Invalid(format!(
            "credential must be what the browser's credential.toJSON() returns: {e}"
        ))
    })
}

/// The WebAuthn user handle of a user (a random UUID, made on first use).
fn user_handle(conn: &Connection, user_id: i64) -> Result<Uuid> {
    let h = passkeys::handle(conn, user_id, || {
        let b: [u8; 16] = crypto::random_bytes(16).try_into().unwrap_or([0; 16]);
        Uuid::from_bytes(b).to_string()
    })?;
    Uuid::parse_str(&h).map_err(|e| Error::Io(format!("passkey handle: {e}")))
}

/// Start a registration for `user_id`: the options as `{"publicKey":{…}}` and the state.
/// The options ask for a discoverable credential when the authenticator can make one
/// (`residentKey: "preferred"`), so the passkey also serves passwordless sign-in.
fn start_registration(
    conn: &Connection,
    rp: &RelyingParty,
    user_id: i64,
) -> Result<(Value, PasskeyRegistration)> {
    let user = users::by_id(conn, user_id)?;
    let handle = user_handle(conn, user_id)?;
    let existing: Vec<_> = passkeys::list(conn, user_id)?
        .iter()
        .filter_map(|p| from_json::<Passkey>(&p.credential).ok())
        .map(|p| p.cred_id().clone())
        .collect();
    let (ccr, state): (CreationChallengeResponse, PasskeyRegistration) = rp
        .webauthn
        .start_passkey_registration(
            handle,
            &user.username,
            &user.username,
            Some(existing).filter(|e| !e.is_empty()),
        )
        .map_err(|e| Error::Io(format!("passkey registration: {e}")))?;
    let mut options =
        serde_json::to_value(&ccr).map_err(|e| Error::Io(format!("passkey options: {e}")))?;
    if let Some(sel) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(Value::as_object_mut)
    {
        sel.insert("residentKey".into(), json!("preferred"));
    }
    Ok((json!({"publicKey": options["publicKey"]}), state))
}

/// Finish a registration: the verified passkey and its row's fields.
fn finish_registration(
    rp: &RelyingParty,
    credential: &RegisterPublicKeyCredential,
    state: &PasskeyRegistration,
) -> std::result::Result<Passkey, WebauthnError> {
    rp.webauthn.finish_passkey_registration(credential, state)
}

/// What a registration's authenticator data says: the authenticator model (AAGUID,
/// zeros when it hides it), the counter and the flags — read with webauthn-rs's own
/// parser from the attestation object's `authData`.
struct RegistrationData {
    aaguid: String,
    sign_count: i64,
    backup_eligible: bool,
    backed_up: bool,
    user_verified: bool,
}

fn registration_data(credential: &RegisterPublicKeyCredential) -> RegistrationData {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "authData")]
        auth_data: serde_cbor_2::Value,
    }
    let parsed =
        serde_cbor_2::from_slice::<Envelope>(credential.response.attestation_object.as_ref())
            .ok()
            .and_then(|env| match env.auth_data {
                serde_cbor_2::Value::Bytes(b) => Some(b),
                _ => None,
            })
            .and_then(|b| {
                webauthn_rs_core::internals::AuthenticatorData::<
                    webauthn_rs_core::proto::Registration,
                >::try_from(b.as_slice())
                .ok()
            });
    match parsed {
        Some(a) => RegistrationData {
            aaguid: a
                .acd
                .map(|acd| Uuid::from_bytes(acd.aaguid).to_string())
                .unwrap_or_else(|| Uuid::nil().to_string()),
            sign_count: i64::from(a.counter),
            backup_eligible: a.backup_eligible,
            backed_up: a.backup_state,
            user_verified: a.user_verified,
        },
        None => RegistrationData {
            aaguid: Uuid::nil().to_string(),
            sign_count: 0,
            backup_eligible: false,
            backed_up: false,
            user_verified: false,
        },
    }
}

fn store_passkey(
    conn: &Connection,
    user_id: i64,
    name: &str,
    pk: &Passkey,
    data: &RegistrationData,
    now: i64,
) -> Result<i64> {
    passkeys::insert(
        conn,
        &NewPasskey {
            user_id,
            name,
            credential_id: &b64url(pk.cred_id().as_ref()),
            credential: &to_json(pk)?,
            aaguid: &data.aaguid,
            sign_count: data.sign_count,
            backup_eligible: data.backup_eligible,
            backed_up: data.backed_up,
            user_verified: data.user_verified,
        },
        now,
    )
}

fn challenge_audit(kind: &str, client: &Client) -> audit::Entry {
    entry(AuditEvent::PasskeyChallenge, Outcome::Success, client).detail(json!({"kind": kind}))
}

// ---- a signed-in user's passkeys --------------------------------------------------------

/// `POST /v1/me/passkeys/options`: a registration challenge bound to the session.
pub fn register_options(
    conn: &mut Connection,
    rp: &RelyingParty,
    client: &Client,
    user_id: i64,
    session_id: i64,
    now: i64,
) -> Result<Value> {
    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, user_id)?;
    let (options, state) = start_registration(&tx, rp, user_id)?;
    passkeys::start_ceremony(
        &tx,
        CeremonyKind::Register,
        Binding::Session(session_id),
        Some(user_id),
        &to_json(&state)?,
        rp.challenge_secs,
        now,
    )?;
    audit::record(
        &tx,
        &challenge_audit("register", client)
            .username(&user.username)
            .user(user.id, user.org_id),
        now,
    )?;
    tx.commit()?;
    Ok(options)
}

/// `POST /v1/me/passkeys`: verify the new credential against the session's challenge
/// (spent either way) and store it. Audited `passkey.register`.
#[allow(clippy::too_many_arguments)]
pub fn register(
    conn: &mut Connection,
    rp: &RelyingParty,
    client: &Client,
    user_id: i64,
    session_id: i64,
    name: &str,
    credential: &Value,
    now: i64,
) -> Result<Registered> {
    let name = passkeys::check_name(name)?;
    let credential: RegisterPublicKeyCredential = parse_credential(credential)?;
    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, user_id)?;
    let base = entry(AuditEvent::PasskeyRegister, Outcome::Failure, client)
        .username(&user.username)
        .user(user.id, user.org_id);
    let ceremony = passkeys::take_ceremony(
        &tx,
        CeremonyKind::Register,
        Binding::Session(session_id),
        now,
    )?;
    let Some(ceremony) = ceremony else {
        audit::record(&tx, &base.reason("no_challenge"), now)?;
        tx.commit()?;
        return Err(Error::Invalid(
            "no passkey registration is in progress (or it expired): ask for options first".into(),
        ));
    };
    let state: PasskeyRegistration = from_json(&ceremony.state)?;
    let pk = match finish_registration(rp, &credential, &state) {
        Ok(pk) => pk,
        Err(e) => {
            audit::record(
                &tx,
                &base
                    .reason("verification_failed")
                    .detail(json!({"error": e.to_string()})),
                now,
            )?;
            tx.commit()?;
            return Err(Error::Invalid(format!(
                "the passkey could not be verified ({e}); try again"
            )));
        }
    };
    let data = registration_data(&credential);
    let aaguid = data.aaguid.clone();
    let id = match store_passkey(&tx, user_id, &name, &pk, &data, now) {
        Ok(id) => id,
        Err(e) => {
            audit::record(&tx, &base.reason("already_registered"), now)?;
            tx.commit()?;
            return Err(e);
        }
    };
    audit::record(
        &tx,
        &entry(AuditEvent::PasskeyRegister, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"passkey_id": id, "name": name, "aaguid": aaguid})),
        now,
    )?;
    tx.commit()?;
    Ok(Registered { id, name })
}

/// A user's passkeys.
pub fn list(conn: &Connection, user_id: i64) -> Result<Vec<PasskeyView>> {
    Ok(passkeys::list(conn, user_id)?
        .iter()
        .map(PasskeyView::from)
        .collect())
}

/// Rename one of the user's own passkeys (audited `passkey.rename`); NotFound when the
/// user has no passkey with this id.
pub fn rename(
    conn: &mut Connection,
    client: &Client,
    user_id: i64,
    id: i64,
    name: &str,
    now: i64,
) -> Result<Registered> {
    let name = passkeys::check_name(name)?;
    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, user_id)?;
    if !passkeys::rename(&tx, user_id, id, &name)? {
        return Err(Error::NotFound(format!("passkey {id} does not exist")));
    }
    audit::record(
        &tx,
        &entry(AuditEvent::PasskeyRename, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"passkey_id": id, "name": name})),
        now,
    )?;
    tx.commit()?;
    Ok(Registered { id, name })
}

/// Remove one of the user's own passkeys (audited `passkey.remove`).
pub fn remove(
    conn: &mut Connection,
    client: &Client,
    user_id: i64,
    id: i64,
    now: i64,
) -> Result<()> {
    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, user_id)?;
    if !passkeys::remove(&tx, user_id, id)? {
        return Err(Error::NotFound(format!("passkey {id} does not exist")));
    }
    audit::record(
        &tx,
        &entry(AuditEvent::PasskeyRemove, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"passkey_id": id})),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

// ---- the login ------------------------------------------------------------------------

/// A second-factor challenge for a login flow (replacing an earlier one of the flow):
/// `{"publicKey":{…}}` with the user's passkeys as allowed credentials.
pub(crate) fn second_factor_options(
    tx: &Connection,
    rp: &RelyingParty,
    client: &Client,
    flow_id: i64,
    user_id: i64,
    now: i64,
) -> Result<Value> {
    let keys: Vec<Passkey> = passkeys::list(tx, user_id)?
        .iter()
        .filter_map(|p| from_json(&p.credential).ok())
        .collect();
    let (rcr, state): (_, PasskeyAuthentication) = rp
        .webauthn
        .start_passkey_authentication(&keys)
        .map_err(|e| Error::Io(format!("passkey authentication: {e}")))?;
    passkeys::start_ceremony(
        tx,
        CeremonyKind::SecondFactor,
        Binding::Flow(flow_id),
        Some(user_id),
        &to_json(&state)?,
        rp.challenge_secs,
        now,
    )?;
    let user = users::by_id(tx, user_id)?;
    audit::record(
        tx,
        &challenge_audit("second_factor", client)
            .username(&user.username)
            .user(user.id, user.org_id),
        now,
    )?;
    let v = serde_json::to_value(&rcr).map_err(|e| Error::Io(e.to_string()))?;
    Ok(json!({"publicKey": v["publicKey"]}))
}

/// What the core does after a step that may answer `second_factor_required` or
/// `enrollment_required`: with passkeys on, issue the flow's passkey challenge and
/// offer passkey enrolment; with them off, "passkey" is not offered at all.
pub(crate) fn decorate(
    conn: &mut Connection,
    rp: Option<&RelyingParty>,
    client: &Client,
    mut d: Decision<Status>,
    now: i64,
) -> Result<Decision<Status>> {
    match (&mut d.result, rp) {
        (
            Ok(Status::SecondFactorRequired {
                flow,
                methods,
                passkey,
            }),
            Some(rp),
        ) if methods.contains(&"passkey") => {
            let tx = db::write_tx(conn)?;
            if let Some(f) = sessions::find_flow(&tx, flow, LoginStep::SecondFactor, now)? {
                *passkey = Some(second_factor_options(
                    &tx, rp, client, f.id, f.user_id, now,
                )?);
            }
            tx.commit()?;
        }
        (Ok(Status::SecondFactorRequired { methods, .. }), None) => {
            methods.retain(|m| *m != "passkey");
        }
        (Ok(Status::EnrollmentRequired { methods, .. }), Some(_))
            if !methods.contains(&"passkey") =>
        {
            methods.push("passkey");
        }
        _ => {}
    }
    Ok(d)
}

/// `POST /v1/login/passkey/options` with a second-factor flow: a fresh challenge for it
/// (after a failed or abandoned attempt). An unknown flow is refused as any step's.
pub fn second_factor_reissue(
    conn: &mut Connection,
    rp: &RelyingParty,
    client: &Client,
    flow_token: &str,
    now: i64,
) -> Result<Decision<Value>> {
    let policy = Policy::load(conn)?;
    let (tx, flow, user, _) = match login::open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::SecondFactor,
        AuditEvent::LoginPasskey,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    if passkeys::count(&tx, user.id)? == 0 {
        tx.commit()?;
        return Ok(Decision::refused(
            Error::Invalid("this account has no passkey".into()),
            "no_passkey",
        ));
    }
    let v = second_factor_options(&tx, rp, client, flow.id, user.id, now)?;
    tx.commit()?;
    Ok(Decision::ok(v))
}

/// `POST /v1/login/passkey/options {}`: a passwordless challenge bound to a new flow
/// token of its own: `(flow, {"publicKey":{…}})`.
pub fn passwordless_options(
    conn: &mut Connection,
    rp: &RelyingParty,
    client: &Client,
    now: i64,
) -> Result<(String, Value)> {
    let (rcr, state): (_, DiscoverableAuthentication) = rp
        .webauthn
        .start_discoverable_authentication()
        .map_err(|e| Error::Io(format!("passkey authentication: {e}")))?;
    let token = crypto::random_token();
    let tx = db::write_tx(conn)?;
    passkeys::start_ceremony(
        &tx,
        CeremonyKind::Passwordless,
        Binding::Token(&token),
        None,
        &to_json(&state)?,
        rp.challenge_secs,
        now,
    )?;
    audit::record(&tx, &challenge_audit("passwordless", client), now)?;
    tx.commit()?;
    let v = serde_json::to_value(&rcr).map_err(|e| Error::Io(e.to_string()))?;
    Ok((token, json!({"publicKey": v["publicKey"]})))
}

/// Why webauthn-rs refused an assertion, for the audit log.
fn assertion_reason(e: &WebauthnError) -> &'static str {
    match e {
        WebauthnError::CredentialPossibleCompromise => "sign_count_regressed",
        WebauthnError::InvalidRPOrigin => "wrong_origin",
        WebauthnError::InvalidRPIDHash => "wrong_rp_id",
        WebauthnError::MismatchedChallenge => "wrong_challenge",
        WebauthnError::UserNotVerified => "user_not_verified",
        _ => "assertion_refused",
    }
}

/// After a verified assertion: store the passkey's new counter, flags and last use.
fn record_assertion(
    tx: &Connection,
    row: &PasskeyRow,
    result: &webauthn_rs::prelude::AuthenticationResult,
    now: i64,
) -> Result<()> {
    let mut pk: Passkey = from_json(&row.credential)?;
    pk.update_credential(result);
    passkeys::record_use(
        tx,
        row.id,
        &to_json(&pk)?,
        i64::from(result.counter()),
        result.backup_state(),
        result.user_verified(),
        now,
    )
}

/// Audit a suspected cloned authenticator (beside the counted refusal).
fn audit_clone(
    tx: &Connection,
    user: &users::User,
    row: &PasskeyRow,
    credential: &PublicKeyCredential,
    client: &Client,
    now: i64,
) -> Result<()> {
    let presented = webauthn_rs_core::internals::AuthenticatorData::<
        webauthn_rs_core::proto::Authentication,
    >::try_from(credential.response.authenticator_data.as_ref())
    .map(|a| a.counter)
    .ok();
    audit::record(
        tx,
        &entry(AuditEvent::PasskeyCloneSuspected, Outcome::Failure, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .reason("sign_count_regressed")
            .detail(json!({"passkey_id": row.id, "name": row.name, "stored_sign_count": row.sign_count, "presented_sign_count": presented})),
        now,
    )?;
    Ok(())
}

/// `POST /v1/login/passkey {"flow","credential","remember_device"?}`: the second factor
/// of a login (a `second_factor_required` flow), or a passwordless sign-in (a flow from
/// `POST /v1/login/passkey/options`).
#[allow(clippy::too_many_arguments)]
pub fn login_step(
    conn: &mut Connection,
    rp: &RelyingParty,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    credential: &Value,
    remember_device: bool,
    now: i64,
) -> Result<Decision<Status>> {
    let credential: PublicKeyCredential = parse_credential(credential)?;
    let second_factor = !flow_token.is_empty()
        && flow_token.len() <= 128
        && sessions::find_flow(conn, flow_token, LoginStep::SecondFactor, now)?.is_some();
    if second_factor {
        second_factor_step(
            conn,
            rp,
            client,
            flow_token,
            &credential,
            remember_device,
            now,
        )
    } else {
        passwordless_step(conn, rp, key, client, flow_token, &credential, now)
    }
}

/// A failed step of a login flow: counted toward lockout as the flow's source and
/// audited ([`login::factor_failure`]).
#[allow(clippy::too_many_arguments)]
fn counted(
    tx: db::WriteTx,
    user: &users::User,
    policy: &Policy,
    event: AuditEvent,
    state: &FlowState,
    client: &Client,
    now: i64,
    reason: &'static str,
) -> Result<Decision<Status>> {
    login::factor_failure(tx, user, policy, event, reason, state.source, client, now)
}

fn second_factor_step(
    conn: &mut Connection,
    rp: &RelyingParty,
    client: &Client,
    flow_token: &str,
    credential: &PublicKeyCredential,
    remember_device: bool,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let (tx, flow, user, state) = match login::open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::SecondFactor,
        AuditEvent::LoginPasskey,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    let fail = |tx, reason| {
        counted(
            tx,
            &user,
            &policy,
            AuditEvent::LoginPasskey,
            &state,
            client,
            now,
            reason,
        )
    };
    let ceremony =
        passkeys::take_ceremony(&tx, CeremonyKind::SecondFactor, Binding::Flow(flow.id), now)?;
    let Some(ceremony) = ceremony else {
        return fail(tx, "no_live_challenge");
    };
    let cred_id = b64url(credential.raw_id.as_ref());
    let row = match passkeys::by_credential_id(&tx, &cred_id)? {
        Some(r) if r.user_id == user.id => r,
        Some(_) => return fail(tx, "credential_of_another_user"),
        None => return fail(tx, "unknown_credential"),
    };
    let st: PasskeyAuthentication = from_json(&ceremony.state)?;
    match rp.webauthn.finish_passkey_authentication(credential, &st) {
        Ok(result) => {
            record_assertion(&tx, &row, &result, now)?;
            login::finish_second_factor(
                tx,
                flow,
                &user,
                &policy,
                AuditEvent::LoginPasskey,
                json!({"mode": "second_factor", "passkey_id": row.id, "user_verified": result.user_verified()}),
                remember_device,
                None,
                client,
                now,
            )
        }
        Err(e) => {
            let reason = assertion_reason(&e);
            if reason == "sign_count_regressed" {
                audit_clone(&tx, &user, &row, credential, client, now)?;
            }
            fail(tx, reason)
        }
    }
}

fn passwordless_step(
    conn: &mut Connection,
    rp: &RelyingParty,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    credential: &PublicKeyCredential,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let lock = policy.lockout();
    let tx = db::write_tx(conn)?;
    let base = entry(AuditEvent::LoginPasskey, Outcome::Failure, client);
    let ceremony = if flow_token.is_empty() || flow_token.len() > 128 {
        None
    } else {
        passkeys::take_ceremony(
            &tx,
            CeremonyKind::Passwordless,
            Binding::Token(flow_token),
            now,
        )?
    };
    // Whose passkey is this? The credential id names it; the user handle the
    // authenticator returned must be that passkey's user's.
    let cred_id = b64url(credential.raw_id.as_ref());
    let row = passkeys::by_credential_id(&tx, &cred_id)?;
    let Some(row) = row else {
        let reason = if ceremony.is_none() {
            "invalid_flow"
        } else {
            "unknown_credential"
        };
        audit::record(
            &tx,
            &base.reason(reason).detail(json!({"mode": "passwordless"})),
            now,
        )?;
        tx.commit()?;
        return Ok(if reason == "invalid_flow" {
            Decision::refused(Error::InvalidFlow, reason)
        } else {
            login::credential_refusal(reason, false)
        });
    };
    let user = users::by_id(&tx, row.user_id)?;
    let source = familiar::source_of(&tx, user.id, &client.ip, None, lock.familiar_days, now)?;
    let refuse = |tx: db::WriteTx,
                  reason: &'static str,
                  counted: bool|
     -> Result<Decision<Status>> {
        let mut locked = lockout::Lock::None;
        if counted {
            locked = users::record_failure_from(&tx, user.id, &lock, source, now)?.lock;
        }
        audit::record(
            &tx,
            &base
                .clone()
                .username(&user.username)
                .user(user.id, user.org_id)
                .reason(reason)
                .detail(json!({"mode": "passwordless", "passkey_id": row.id, "counted": counted})),
            now,
        )?;
        let locked_now =
            login::audit_lock(&tx, &user, locked, policy.lockout_max_failures, client, now)?;
        tx.commit()?;
        Ok(if reason == "invalid_flow" {
            Decision::refused(Error::InvalidFlow, reason)
        } else {
            login::credential_refusal(reason, locked_now)
        })
    };
    if user.disabled {
        return refuse(tx, "disabled", false);
    }
    if let Some(reason) = user.lock_state().refusal(lock.mode, source, now) {
        return refuse(tx, reason, false);
    }
    let Some(ceremony) = ceremony else {
        // Spent, expired or never issued: a replayed or stale assertion.
        return refuse(tx, "no_live_challenge", true);
    };
    let handle_ok = match rp.webauthn.identify_discoverable_authentication(credential) {
        Ok((handle, _)) => passkeys::user_of_handle(&tx, &handle.to_string())? == Some(user.id),
        Err(_) => false,
    };
    if !handle_ok {
        return refuse(tx, "credential_of_another_user", true);
    }
    let st: DiscoverableAuthentication = from_json(&ceremony.state)?;
    let pk: Passkey = from_json(&row.credential)?;
    let result = match rp
        .webauthn
        .finish_discoverable_authentication_v2(credential, st, &pk)
    {
        Ok(r) => r,
        Err(e) => {
            let reason = assertion_reason(&e);
            if reason == "sign_count_regressed" {
                audit_clone(&tx, &user, &row, credential, client, now)?;
            }
            return refuse(tx, reason, true);
        }
    };
    if !result.user_verified() {
        return refuse(tx, "user_not_verified", true);
    }
    record_assertion(&tx, &row, &result, now)?;
    let mut mail = None;
    let status = login::advance(
        &tx,
        key,
        &user,
        &policy,
        &FlowState {
            passkey_ok: true,
            source,
            ..FlowState::default()
        },
        client,
        &mut mail,
        now,
    )?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginPasskey, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"mode": "passwordless", "passkey_id": row.id, "user_verified": true, "next": login::status_name(&status)})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision {
        mail,
        ..Decision::ok(status)
    })
}

// ---- enrolment inside a login flow ----------------------------------------------------

/// `POST /v1/login/enroll {"flow","method":"passkey"}`: a registration challenge bound
/// to the enrolment flow, which moves on to confirmation (same token).
pub fn enroll_options(
    conn: &mut Connection,
    rp: &RelyingParty,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    now: i64,
) -> Result<Decision<Value>> {
    // An enrolment that began with an authenticator app (its flow awaits the app's first
    // code) may switch to a passkey: the flow goes back to its enrolment step.
    if !flow_token.is_empty() && flow_token.len() <= 128 {
        if let Some(f) = sessions::find_flow(conn, flow_token, LoginStep::EnrollConfirm, now)? {
            let tx = db::write_tx(conn)?;
            sessions::set_flow_step(&tx, f.id, LoginStep::Enroll)?;
            tx.commit()?;
        }
    }
    let policy = Policy::load(conn)?;
    let (tx, flow, user) =
        match login::open_enrollment(conn, &policy, key, client, flow_token, now)? {
            Ok(opened) => opened,
            Err(refused) => return Ok(refused),
        };
    let (options, state) = start_registration(&tx, rp, user.id)?;
    passkeys::start_ceremony(
        &tx,
        CeremonyKind::Enroll,
        Binding::Flow(flow.id),
        Some(user.id),
        &to_json(&state)?,
        rp.challenge_secs,
        now,
    )?;
    sessions::set_flow_step(&tx, flow.id, LoginStep::EnrollConfirm)?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginEnroll, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"method": "passkey"})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(options))
}

/// `POST /v1/login/enroll/confirm {"flow","credential"}`: store the enrolled passkey
/// (named "Passkey"), issue recovery codes; the user then signs in again.
pub fn enroll_confirm(
    conn: &mut Connection,
    rp: &RelyingParty,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    credential: &Value,
    now: i64,
) -> Result<Decision<Status>> {
    let credential: RegisterPublicKeyCredential = parse_credential(credential)?;
    let policy = Policy::load(conn)?;
    let (tx, flow, user, state) = match login::open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::EnrollConfirm,
        AuditEvent::LoginEnrollConfirm,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    let fail = |tx, reason| {
        counted(
            tx,
            &user,
            &policy,
            AuditEvent::LoginEnrollConfirm,
            &state,
            client,
            now,
            reason,
        )
    };
    let Some(ceremony) =
        passkeys::take_ceremony(&tx, CeremonyKind::Enroll, Binding::Flow(flow.id), now)?
    else {
        return fail(tx, "no_live_challenge");
    };
    let st: PasskeyRegistration = from_json(&ceremony.state)?;
    let pk = match finish_registration(rp, &credential, &st) {
        Ok(pk) => pk,
        Err(_) => return fail(tx, "verification_failed"),
    };
    let data = registration_data(&credential);
    let aaguid = data.aaguid.clone();
    let id = match store_passkey(&tx, user.id, "Passkey", &pk, &data, now) {
        Ok(id) => id,
        Err(Error::Conflict(_)) => return fail(tx, "already_registered"),
        Err(e) => return Err(e),
    };
    sessions::consume_flow(&tx, flow.id, now)?;
    let codes = factors::rotate_recovery_codes(&tx, key, user.id, policy.recovery_count, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::PasskeyRegister, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(
                json!({"passkey_id": id, "name": "Passkey", "aaguid": aaguid, "in_login": true}),
            ),
        now,
    )?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginEnrollConfirm, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"method": "passkey"})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(Status::Enrolled {
        recovery_codes: codes,
    }))
}
