//! authd as an OpenID Connect provider: what the authorization, token, userinfo,
//! revocation, introspection and logout endpoints decide. The daemon only speaks HTTP
//! (daemon/oidc.rs, daemon/portal/oidc.rs); every decision and its audit row are here.
//!
//! - **Clients** (`authctl client add`) are matched by exact redirect URI (byte for byte:
//!   no normalisation, so an extra path, query, fragment, case change, userinfo or IDN
//!   spelling is another URI and is refused before any redirect). A confidential
//!   client's secret (256 random bits) is stored as its SHA-256 and compared in constant
//!   time; a public client has none and must use PKCE.
//! - **Codes** are single use, live [`CODE_TTL`] seconds and are bound to their client,
//!   redirect URI, PKCE challenge (S256 only), nonce and the factors of the session that
//!   signed in. A code presented twice is refused and every token of its first exchange
//!   revoked (the grant).
//! - **Tokens**: access tokens and ID tokens are JWTs (RS256 by default; a client's ID
//!   tokens EdDSA or ES256 by its choice, `authctl client add --id-token-alg`) with
//!   a `jti` the database keeps, so they can be revoked and introspected; refresh tokens
//!   (scope `offline_access`) are opaque, rotated on every use, and a rotated one used
//!   again revokes its whole grant.
//! - **Keys** (RS256, EdDSA and ES256) are generated on first use and stored encrypted under the
//!   key file (`crypto::SecretKey::encrypt`, bound to their kid). Rotation retires the
//!   current keys: a retired key signs nothing more and stays in the JWKS (and is still
//!   accepted) for [`TOKEN_TTL`] seconds, until every token it signed has expired.
//! - **amr / acr** come from the factors the session's sign-in actually used
//!   (`sessions.factors`): `pwd`, `otp` (authenticator app, emailed or recovery code),
//!   `mfa` with any second factor (also a remembered device); `acr` is [`ACR_MFA`] for a
//!   second factor given in the sign-in, [`ACR_DEVICE`] for a password on a remembered
//!   device, [`ACR_PWD`] for a password alone.
//! - **Step-up**: `acr_values` names the classes a client accepts; when the session's is
//!   lower than every one of them and the user has a second factor, the portal asks for
//!   that factor only ([`Authorize::StepUp`], `login::step_up_step`), then comes back to
//!   the request with a session whose factors add it (a new ID token's `amr` / `acr`).

use crate::sql::Connection;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::admin::Actor;
use crate::audit::{self, Entry, Outcome};
use crate::core::Core;
use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};
use crate::kinds::{AccountStatus, AuditEvent, MfaMethod};
use crate::login::{self, Client as Peer, Decision, SessionInfo, Status};
use crate::store::oidc::{self as store, Client, TokenKind};
use crate::store::{sessions, users};

/// How long an authorization code lives, in seconds.
pub const CODE_TTL: i64 = 60;
/// How long access and ID tokens live, in seconds (and a retired key stays published).
pub const TOKEN_TTL: i64 = 600;
/// How long a refresh token lives unused, in seconds.
pub const REFRESH_TTL: i64 = 30 * 86_400;
/// `acr` of a sign-in with a second factor.
pub const ACR_MFA: &str = "urn:authd:acr:mfa";
/// `acr` of a sign-in with a password on a remembered device (no second factor given).
pub const ACR_DEVICE: &str = "urn:authd:acr:device";
/// `acr` of a sign-in with a password alone.
pub const ACR_PWD: &str = "urn:authd:acr:pwd";
/// The `acr` values, weakest first.
pub const ACRS: &[&str] = &[ACR_PWD, ACR_DEVICE, ACR_MFA];
/// The scopes authd knows.
pub const SCOPES: &[&str] = &["openid", "profile", "email", "groups", "offline_access"];

const RSA_BITS: usize = 2048;

// ---------------------------------------------------------------------------------------
// Signing keys

/// A private signing key, decrypted.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

fn alg_of(s: &str) -> Result<Algorithm> {
    match s {
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(Error::Invalid(format!("unknown signing algorithm {other}"))),
    }
}

use crate::store::oidc::key_aad as aad;

/// The signing algorithms authd holds a key of, and a client may choose for its ID tokens.
pub const ID_TOKEN_ALGS: &[&str] = &["RS256", "EdDSA", "ES256"];

/// A new key pair of `alg`: (kid, private DER).
fn generate(alg: &str) -> Result<(String, Vec<u8>)> {
    let der = match alg {
        "RS256" => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let k = rsa::RsaPrivateKey::new(
                &mut getrandom::rand_core::UnwrapErr(getrandom::SysRng),
                RSA_BITS,
            )
            .map_err(|e| Error::Io(format!("RSA key generation failed: {e}")))?;
            k.to_pkcs1_der()
                .map_err(|e| Error::Io(format!("RSA key encoding failed: {e}")))?
                .as_bytes()
                .to_vec()
        }
        "EdDSA" => {
            // PKCS#8 v1 (the seed alone): what jsonwebtoken reads an Ed25519 key from.
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&crypto::random_bytes(32));
            let k = ed25519_dalek::ed25519::pkcs8::KeypairBytes {
                secret_key: seed,
                public_key: None,
            };
            k.to_pkcs8_der()
                .map_err(|e| Error::Io(format!("Ed25519 key encoding failed: {e}")))?
                .as_bytes()
                .to_vec()
        }
        "ES256" => {
            // PKCS#8 (RFC 5915 inside): what jsonwebtoken's AWS-LC backend signs with.
            use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map_err(|_| Error::Io("P-256 key generation failed".into()))?
                .as_ref()
                .to_vec()
        }
        other => return Err(Error::Invalid(format!("unknown signing algorithm {other}"))),
    };
    let kid = data_encoding::BASE64URL_NOPAD.encode(&crypto::random_bytes(12));
    Ok((kid, der))
}

fn encoding_key(alg: Algorithm, der: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_der(der),
        Algorithm::ES256 => EncodingKey::from_ec_der(der),
        _ => EncodingKey::from_rsa_der(der),
    }
}

/// The keys that verify (active, and retired less than [`TOKEN_TTL`] ago), decrypted.
fn load_keys(conn: &Connection, key: &SecretKey, now: i64) -> Result<Vec<(Signer, bool)>> {
    store::keys(conn, now - TOKEN_TTL)?
        .into_iter()
        .map(|k| {
            let der = key.decrypt(&k.private_enc, &aad(&k.kid))?;
            let alg = alg_of(&k.alg)?;
            Ok((
                Signer {
                    alg,
                    key: encoding_key(alg, &der),
                    kid: k.kid,
                },
                k.retired_at.is_none(),
            ))
        })
        .collect()
}

/// Generate and store the keys of every algorithm that has no active key.
fn ensure_keys(core: &Core) -> Result<()> {
    let now = core.now();
    let have: Vec<String> = core.with_conn(|c, _| {
        Ok(store::keys(c, now)?
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.alg)
            .collect())
    })?;
    for &alg in ID_TOKEN_ALGS {
        if have.iter().any(|a| a == alg) {
            continue;
        }
        // The slow part (RSA) outside the transaction.
        let (kid, der) = generate(alg)?;
        core.write(|tx, key, now| {
            let active = store::keys(tx, now)?
                .iter()
                .any(|k| k.retired_at.is_none() && k.alg == alg);
            if !active {
                store::add_key(tx, &kid, alg, &key.encrypt(&der, &aad(&kid)), now)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn sign(signer: &Signer, claims: &Value) -> Result<String> {
    let mut h = Header::new(signer.alg);
    h.kid = Some(signer.kid.clone());
    h.typ = Some("JWT".into());
    jsonwebtoken::encode(&h, claims, &signer.key)
        .map_err(|e| Error::Io(format!("signing failed: {e}")))
}

fn public_jwk(s: &Signer) -> Result<Jwk> {
    let mut jwk =
        Jwk::from_encoding_key(&s.key, s.alg).map_err(|e| Error::Io(format!("public key: {e}")))?;
    jwk.common.key_id = Some(s.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

/// Verify a JWT of ours: a known kid, its algorithm exactly (never `none`), its
/// signature and issuer; expiry only when `check_exp`. The claims, or None.
fn verify(
    conn: &Connection,
    key: &SecretKey,
    issuer: &str,
    token: &str,
    check_exp: bool,
    now: i64,
) -> Result<Option<Value>> {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return Ok(None);
    };
    let Some(kid) = header.kid else {
        return Ok(None);
    };
    let keys = load_keys(conn, key, now)?;
    let Some((signer, _)) = keys.iter().find(|(s, _)| s.kid == kid) else {
        return Ok(None);
    };
    if header.alg != signer.alg {
        return Ok(None);
    }
    let Ok(dk) = public_jwk(signer)
        .and_then(|j| DecodingKey::from_jwk(&j).map_err(|e| Error::Io(format!("public key: {e}"))))
    else {
        return Ok(None);
    };
    let mut v = Validation::new(signer.alg);
    // Time is a parameter: expiry is checked below against `now`.
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.set_issuer(&[issuer]);
    let Ok(data) = jsonwebtoken::decode::<Value>(token, &dk, &v) else {
        return Ok(None);
    };
    let claims = data.claims;
    if check_exp && claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Ok(None);
    }
    Ok(Some(claims))
}

// ---------------------------------------------------------------------------------------
// Requests and answers

/// An authorization request's parameters, as the client sent them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthRequest {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub redirect_uri: String,
    #[serde(default)]
    pub response_type: String,
    #[serde(default)]
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub acr_values: Option<String>,
}

/// What the authorization endpoint does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorize {
    /// The client or redirect URI is not registered: say so on a page, never redirect.
    BadClient(String),
    /// Back to the client (a code, or an error) at this URL.
    Redirect(String),
    /// Sign in first, then return to [`after_sign_in`] of the request; `again`: end the
    /// current session first (`prompt=login`, `max_age=0`, a sign-in older than `max_age`).
    Login { again: bool },
    /// Ask the user whether `client` may have `scopes`.
    Consent { client: String, scopes: Vec<String> },
    /// The client is restricted to groups this user is in none of.
    Forbidden { client: String, groups: Vec<String> },
    /// The client's `acr_values` ask for more than the session's sign-in gave, and the
    /// user has a second factor: ask for it (`Core::oidc_step_up`), then return.
    StepUp { client: String, acr: &'static str },
}

/// The client's own authentication at the token, revocation and introspection
/// endpoints (`client_secret_basic` / `client_secret_post`, or none for a public one).
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    pub client_id: String,
    pub secret: Option<String>,
}

/// A token request's parameters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    #[serde(default)]
    pub grant_type: String,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
}

/// A successful token answer (RFC 6749 5.1).
#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// An OAuth error answer (RFC 6749 5.2): `status` 400 or 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: &str) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.to_string(),
        }
    }
    fn invalid_grant(d: &str) -> OAuthError {
        OAuthError::new(400, "invalid_grant", d)
    }
    fn invalid_client() -> OAuthError {
        OAuthError::new(401, "invalid_client", "client authentication failed")
    }
}

/// `uri` with `pairs` added to its query.
pub fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", s.finish())
}

/// A redirect URI fit to register: an absolute http(s) URL without fragment, userinfo,
/// whitespace or control characters (matching is then exact, byte for byte).
pub fn check_redirect_uri(uri: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("redirect URI {uri:?}: {why}")));
    let Some((scheme, rest)) = uri.split_once("://") else {
        return bad("not an absolute URL");
    };
    if scheme != "https" && scheme != "http" {
        return bad("the scheme must be https (or http)");
    }
    if uri.len() > 2000 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("too long, or whitespace or control characters");
    }
    if uri.contains('#') {
        return bad("a fragment is not allowed");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return bad("no host, or userinfo in it");
    }
    Ok(())
}

/// S256(verifier), base64url without padding (RFC 7636 4.2).
pub fn pkce_s256(verifier: &str) -> String {
    data_encoding::BASE64URL_NOPAD.encode(&Sha256::digest(verifier.as_bytes()))
}

/// The authorization request (`query`, its parameters in order) to come back to after
/// the sign-in that [`Authorize::Login`] leads to: without `login` in `prompt` (the
/// parameter dropped when nothing else is left; `consent` stays) and without a `max_age`
/// of 0. That sign-in is the new one they ask for, so the way back must not ask again
/// (and end it). A larger `max_age` stays: the sign-in just made meets it.
pub fn after_sign_in(query: &[(String, String)]) -> Vec<(String, String)> {
    query
        .iter()
        .filter_map(|(k, v)| match k.as_str() {
            "prompt" => {
                let rest: Vec<&str> = scopes(v).into_iter().filter(|p| *p != "login").collect();
                (!rest.is_empty()).then(|| (k.clone(), rest.join(" ")))
            }
            "max_age" if v.parse::<i64>() == Ok(0) => None,
            _ => Some((k.clone(), v.clone())),
        })
        .collect()
}

fn scopes(s: &str) -> Vec<&str> {
    s.split(' ').filter(|x| !x.is_empty()).collect()
}

fn has_scope(scope: &str, s: &str) -> bool {
    scopes(scope).contains(&s)
}

/// `amr` of a session's factors (RFC 8176 values).
pub fn amr(factors: &str) -> Vec<&'static str> {
    let mut out = vec![];
    let f: Vec<&str> = factors.split(' ').collect();
    if f.contains(&"pwd") {
        out.push("pwd");
    }
    if f.iter()
        .any(|x| matches!(*x, "totp" | "email" | "recovery"))
    {
        out.push("otp");
    }
    if f.contains(&"hwk") {
        out.push("hwk");
    }
    if f.len() > 1 {
        out.push("mfa");
    }
    out
}

/// `acr` of a session's factors: a second factor given (a code, a passkey), a remembered
/// device, or a password alone.
pub fn acr(factors: &str) -> &'static str {
    let a = amr(factors);
    if a.contains(&"otp") || a.contains(&"hwk") {
        ACR_MFA
    } else if a.contains(&"mfa") {
        ACR_DEVICE
    } else {
        ACR_PWD
    }
}

/// The rank in [`ACRS`] of an `acr` value (None: not one of authd's).
fn acr_rank(a: &str) -> Option<usize> {
    ACRS.iter().position(|x| *x == a)
}

/// The weakest `acr` an `acr_values` request accepts (any value it lists will do; values
/// authd does not know are ignored), or None: no requirement.
pub fn acr_wanted(acr_values: &str) -> Option<&'static str> {
    scopes(acr_values)
        .into_iter()
        .filter_map(acr_rank)
        .min()
        .map(|i| ACRS[i])
}

/// `e` on user `id`: its name, id and organisation.
fn on_user(conn: &Connection, e: Entry, id: i64) -> Result<Entry> {
    let u = users::by_id(conn, id)?;
    Ok(e.username(&u.username).user(u.id, u.org_id))
}

fn peer_entry(event: AuditEvent, outcome: Outcome, peer: &Peer) -> Entry {
    Entry::new(event, outcome).client(&peer.ip, &peer.user_agent)
}

/// Authenticate a client: Some(client) when its secret (or, public, its lack of one) is
/// right.
fn authenticate_client(conn: &Connection, auth: &ClientAuth) -> Result<Option<Client>> {
    let Some(c) = store::client_by_client_id(conn, &auth.client_id)? else {
        return Ok(None);
    };
    let ok = match (&c.secret_hash, &auth.secret) {
        (Some(h), Some(s)) => crypto::ct_eq(crypto::hash_token(s).as_bytes(), h.as_bytes()),
        (None, None) => true,
        _ => false,
    };
    Ok(ok.then_some(c))
}

/// The claims of `user` that `scope` opens.
fn user_claims(conn: &Connection, user_id: i64, scope: &str) -> Result<Value> {
    let u = users::by_id(conn, user_id)?;
    let mut c = json!({ "sub": u.id.to_string() });
    if has_scope(scope, "profile") {
        c["preferred_username"] = json!(u.username);
        c["name"] = json!(u.username);
    }
    if has_scope(scope, "email") {
        c["email"] = json!(u.email);
        // Emailed codes reach the address: a user signing in with them has shown it is
        // theirs. Otherwise authd has not checked it.
        c["email_verified"] = json!(u.mfa_method == Some(MfaMethod::Email));
    }
    if has_scope(scope, "groups") {
        c["groups"] = json!(u.groups);
        c["org"] = json!(u.org);
    }
    Ok(c)
}

/// The ID token, access token and (offline_access) refresh token of a grant.
#[allow(clippy::too_many_arguments)]
fn issue(
    tx: &Connection,
    key: &SecretKey,
    issuer: &str,
    client: &Client,
    code: &store::Code,
    nonce: Option<&str>,
    with_refresh: bool,
    now: i64,
) -> Result<Tokens> {
    let keys = load_keys(tx, key, now)?;
    let active = |alg: Algorithm| {
        keys.iter()
            .find(|(s, active)| *active && s.alg == alg)
            .map(|(s, _)| s)
            .ok_or_else(|| Error::Io(format!("no active {alg:?} signing key")))
    };
    let signer = active(Algorithm::RS256)?;
    let id_signer = active(alg_of(&client.id_token_alg)?)?;
    let jti = crypto::random_token();
    let sub = code.user_id.to_string();
    let exp = now + TOKEN_TTL;
    let access = sign(
        signer,
        &json!({
            "iss": issuer, "sub": sub, "aud": client.client_id, "client_id": client.client_id,
            "iat": now, "exp": exp, "jti": jti, "scope": code.scope,
        }),
    )?;
    store::add_token(
        tx,
        &jti,
        TokenKind::Access,
        code.id,
        client.id,
        code.user_id,
        &code.scope,
        exp,
        now,
    )?;
    let id_token = if has_scope(&code.scope, "openid") {
        let mut c = user_claims(tx, code.user_id, &code.scope)?;
        c["iss"] = json!(issuer);
        c["aud"] = json!(client.client_id);
        c["azp"] = json!(client.client_id);
        c["iat"] = json!(now);
        c["exp"] = json!(exp);
        c["auth_time"] = json!(code.auth_time);
        c["amr"] = json!(amr(&code.factors));
        c["acr"] = json!(acr(&code.factors));
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        Some(sign(id_signer, &c)?)
    } else {
        None
    };
    let refresh_token = if with_refresh && has_scope(&code.scope, "offline_access") {
        let t = crypto::random_token();
        store::add_token(
            tx,
            &t,
            TokenKind::Refresh,
            code.id,
            client.id,
            code.user_id,
            &code.scope,
            now + REFRESH_TTL,
            now,
        )?;
        Some(t)
    } else {
        None
    };
    Ok(Tokens {
        access_token: access,
        token_type: "Bearer",
        expires_in: TOKEN_TTL,
        id_token,
        refresh_token,
        scope: code.scope.clone(),
    })
}

/// The token a revocation or introspection names: (stored row) for an access token of
/// ours (by its jti) or a refresh token.
fn lookup_token(
    conn: &Connection,
    key: &SecretKey,
    issuer: &str,
    token: &str,
    now: i64,
) -> Result<Option<store::Token>> {
    if token.matches('.').count() == 2 {
        let Some(claims) = verify(conn, key, issuer, token, false, now)? else {
            return Ok(None);
        };
        let Some(jti) = claims["jti"].as_str() else {
            return Ok(None);
        };
        return Ok(store::find_token(conn, jti)?.filter(|t| t.kind == TokenKind::Access));
    }
    Ok(store::find_token(conn, token)?.filter(|t| t.kind == TokenKind::Refresh))
}

fn user_active(conn: &Connection, user_id: i64, now: i64) -> Result<bool> {
    let u = users::by_id(conn, user_id)?;
    Ok(u.status == AccountStatus::Active && !u.account_locked(now))
}

/// The client's view for `authctl client list|show` and the secret given once.
#[derive(Debug, Clone, Serialize)]
pub struct NewClient {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl Core {
    // -----------------------------------------------------------------------------------
    // Administration (authctl)

    /// Register a client, audited `admin.client.add`. The secret (None for a public
    /// client) is returned once; only its hash is kept.
    #[allow(clippy::too_many_arguments)]
    pub fn oidc_client_add(
        &self,
        actor: &Actor,
        name: &str,
        redirect_uris: &[String],
        public: bool,
        trusted: bool,
        groups: &[String],
        id_token_alg: &str,
    ) -> Result<NewClient> {
        if !ID_TOKEN_ALGS.contains(&id_token_alg) {
            return Err(Error::Invalid(format!(
                "ID tokens are signed RS256, EdDSA or ES256, not {id_token_alg:?}"
            )));
        }
        if name.trim().is_empty() || name.len() > 128 {
            return Err(Error::Invalid(
                "a client needs a name (at most 128 bytes)".into(),
            ));
        }
        if redirect_uris.is_empty() {
            return Err(Error::Invalid(
                "a client needs at least one --redirect-uri".into(),
            ));
        }
        for u in redirect_uris {
            check_redirect_uri(u)?;
        }
        let event = AuditEvent::AdminClientAdd;
        self.global_write(actor, event, |tx, _, now| {
            let mut names = vec![];
            for g in groups {
                names.push(crate::store::orgs::get_group(tx, g)?.name);
            }
            let client_id = data_encoding::BASE64URL_NOPAD.encode(&crypto::random_bytes(16));
            let secret = (!public).then(crypto::random_token);
            let hash = secret.as_deref().map(crypto::hash_token);
            let c = store::add_client(
                tx,
                &client_id,
                name.trim(),
                hash.as_deref(),
                trusted,
                redirect_uris,
                &names,
                id_token_alg,
                now,
            )?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({
                        "client": c.name, "client_id": c.client_id, "public": public,
                        "trusted": trusted, "redirect_uris": redirect_uris, "groups": names,
                    "id_token_alg": id_token_alg,
                    }))),
                now,
            )?;
            Ok(NewClient {
                client_id,
                client_secret: secret,
            })
        })
    }

    /// Every client.
    pub fn oidc_clients(&self) -> Result<Vec<Client>> {
        self.with_conn(|c, _| store::list_clients(c))
    }

    /// One client by name or client_id.
    pub fn oidc_client(&self, name: &str) -> Result<Client> {
        self.with_conn(|c, _| {
            store::client_by_name(c, name)?
                .ok_or_else(|| Error::NotFound(format!("no client named {name}")))
        })
    }

    /// One admin action on the client `name` (by name or client_id) with its audit row.
    fn client_action<T>(
        &self,
        actor: &Actor,
        event: AuditEvent,
        name: &str,
        act: impl FnOnce(&Connection, &Client) -> Result<T>,
    ) -> Result<(Client, T)> {
        self.global_write(actor, event, |tx, _, now| {
            let c = store::client_by_name(tx, name)?
                .ok_or_else(|| Error::NotFound(format!("no client named {name}")))?;
            let v = act(tx, &c)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"client": c.name, "client_id": c.client_id}))),
                now,
            )?;
            Ok((c, v))
        })
    }

    /// Remove a client and everything issued to it, audited `admin.client.remove`.
    pub fn oidc_client_remove(&self, actor: &Actor, name: &str) -> Result<Client> {
        let event = AuditEvent::AdminClientRemove;
        let (c, ()) =
            self.client_action(actor, event, name, |tx, c| store::remove_client(tx, c.id))?;
        Ok(c)
    }

    /// A new secret for a confidential client (the old one stops working), audited
    /// `admin.client.rotate_secret`.
    pub fn oidc_client_rotate_secret(&self, actor: &Actor, name: &str) -> Result<NewClient> {
        let event = AuditEvent::AdminClientRotateSecret;
        let (c, secret) = self.client_action(actor, event, name, |tx, c| {
            if c.public {
                return Err(Error::Invalid(format!(
                    "{} is a public client: it has no secret",
                    c.name
                )));
            }
            let secret = crypto::random_token();
            store::set_secret(tx, c.id, &crypto::hash_token(&secret))?;
            Ok(secret)
        })?;
        Ok(NewClient {
            client_id: c.client_id,
            client_secret: Some(secret),
        })
    }

    /// Retire the signing keys and make new ones, audited `admin.oidc.rotate_keys`. The
    /// retired keys stay published for [`TOKEN_TTL`] seconds.
    pub fn oidc_rotate_keys(&self, actor: &Actor) -> Result<usize> {
        let event = AuditEvent::AdminOidcRotateKeys;
        let retired = self.global_write(actor, event, |tx, _, now| {
            let n = store::retire_keys(tx, now)?;
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"retired": n}))),
                now,
            )?;
            Ok(n)
        })?;
        ensure_keys(self)?;
        Ok(retired)
    }

    // -----------------------------------------------------------------------------------
    // The endpoints

    /// The published keys (JWKS): active ones, and retired ones whose tokens may live.
    pub fn oidc_jwks(&self) -> Result<Value> {
        ensure_keys(self)?;
        let now = self.now();
        self.with_conn(|c, key| {
            let keys = load_keys(c, key, now)?
                .iter()
                .map(|(s, _)| public_jwk(s))
                .collect::<Result<Vec<_>>>()?;
            Ok(serde_json::to_value(JwkSet { keys }).unwrap_or_default())
        })
    }

    /// The authorization endpoint's decision for `req`, with the browser's portal session
    /// (if any). `consent`: the user's answer on the consent page (None: not asked).
    pub fn oidc_authorize(
        &self,
        issuer: &str,
        req: &AuthRequest,
        session: Option<&SessionInfo>,
        consent: Option<bool>,
        peer: &Peer,
    ) -> Result<Authorize> {
        ensure_keys(self)?;
        let event = AuditEvent::OidcAuthorize;
        self.write(|tx, key, now| {
            let refuse = |reason: &str, detail: Value| -> Result<()> {
                let mut e = peer_entry(event, Outcome::Failure, peer)
                    .reason(reason)
                    .detail(detail);
                if let Some(s) = session {
                    e = e.username(&s.user.username).user(s.user_id, s.org_id);
                }
                audit::record(tx, &e, now)?;
                Ok(())
            };
            let client = match store::client_by_client_id(tx, &req.client_id)? {
                Some(c) if c.redirect_uris.iter().any(|u| u == &req.redirect_uri) => c,
                found => {
                    let reason = if found.is_some() {
                        "redirect_uri_mismatch"
                    } else {
                        "unknown_client"
                    };
                    refuse(
                        reason,
                        json!({"client_id": req.client_id, "redirect_uri": req.redirect_uri}),
                    )?;
                    return Ok(Authorize::BadClient(if found.is_some() {
                        "This application asked to send you to an address it has not \
                         registered. Nothing was sent to it."
                            .into()
                    } else {
                        "This application is not known here.".into()
                    }));
                }
            };
            let back = |pairs: &[(&str, &str)]| {
                let mut p: Vec<(&str, &str)> = pairs.to_vec();
                if let Some(s) = &req.state {
                    p.push(("state", s));
                }
                p.push(("iss", issuer));
                Authorize::Redirect(with_query(&client.redirect_uri_of(&req.redirect_uri), &p))
            };
            let error = |code: &str, reason: &str, desc: &str| -> Result<Authorize> {
                refuse(reason, json!({"client": client.name, "error": code}))?;
                Ok(back(&[("error", code), ("error_description", desc)]))
            };
            if req.response_type != "code" {
                return error(
                    "unsupported_response_type",
                    "response_type",
                    "only the code flow",
                );
            }
            let requested = scopes(&req.scope);
            if !requested.contains(&"openid") {
                return error("invalid_scope", "scope", "the openid scope is required");
            }
            let scope: Vec<&str> = requested
                .iter()
                .copied()
                .filter(|s| SCOPES.contains(s))
                .collect();
            let scope = scope.join(" ");
            match (&req.code_challenge, req.code_challenge_method.as_deref()) {
                (Some(c), Some("S256")) if c.len() >= 43 && c.len() <= 128 => {}
                (None, None) if !client.public => {}
                (None, _) => {
                    return error("invalid_request", "pkce_missing", "PKCE (S256) is required")
                }
                _ => {
                    return error(
                        "invalid_request",
                        "pkce_method",
                        "PKCE must use S256 and a valid challenge",
                    )
                }
            }
            let prompts: Vec<&str> = req.prompt.as_deref().map(scopes).unwrap_or_default();
            let max_age = match req.max_age.as_deref().map(str::parse::<i64>) {
                None => None,
                Some(Ok(n)) if n >= 0 => Some(n),
                Some(_) => return error("invalid_request", "max_age", "bad max_age"),
            };
            let Some(s) = session else {
                if prompts.contains(&"none") {
                    return error("login_required", "no_session", "sign-in required");
                }
                return Ok(Authorize::Login { again: false });
            };
            let (factors, auth_time) =
                sessions::factors_of(tx, s.session.id)?.unwrap_or((String::new(), now));
            // prompt=login and max_age=0 ask for a new sign-in whatever the session's age
            // (OpenID Connect Core 3.1.2.1); the way back after it no longer asks
            // ([`after_sign_in`]), so it does not loop.
            let again = prompts.contains(&"login")
                || max_age.is_some_and(|m| m == 0 || now.saturating_sub(auth_time) > m);
            if again {
                if prompts.contains(&"none") {
                    return error("login_required", "reauthentication", "sign-in required");
                }
                return Ok(Authorize::Login { again: true });
            }
            if !client.groups.is_empty() {
                let keys: Vec<String> = s
                    .user
                    .groups
                    .iter()
                    .map(|g| crate::names::key_of(g))
                    .collect();
                if !client
                    .groups
                    .iter()
                    .any(|g| keys.contains(&crate::names::key_of(g)))
                {
                    refuse(
                        "group",
                        json!({"client": client.name, "groups": client.groups}),
                    )?;
                    return Ok(Authorize::Forbidden {
                        client: client.name.clone(),
                        groups: client.groups.clone(),
                    });
                }
            }
            let wanted = req.acr_values.as_deref().and_then(acr_wanted);
            if let Some(want) = wanted.filter(|w| acr_rank(acr(&factors)) < acr_rank(w)) {
                // Short of what the client asks: the missing second factor, if the user
                // has one (a step-up of this session), else refused.
                let user = users::by_id(tx, s.user_id)?;
                if login::methods(tx, key, &user, crate::policy::PasskeyRequired::read(tx)?)?
                    .is_empty()
                {
                    return error(
                        "unmet_authentication_requirements",
                        "acr_unmet",
                        "this account has no second factor",
                    );
                }
                if prompts.contains(&"none") {
                    return error(
                        "interaction_required",
                        "step_up",
                        "a second factor is required",
                    );
                }
                return Ok(Authorize::StepUp {
                    client: client.name.clone(),
                    acr: want,
                });
            }
            if consent == Some(false) {
                return error("access_denied", "consent_refused", "the user said no");
            }
            if !client.trusted {
                if consent == Some(true) {
                    store::set_consent(tx, s.user_id, client.id, &scope, now)?;
                    audit::record(
                        tx,
                        &peer_entry(AuditEvent::OidcConsent, Outcome::Success, peer)
                            .username(&s.user.username)
                            .user(s.user_id, s.org_id)
                            .detail(json!({"client": client.name, "scope": scope})),
                        now,
                    )?;
                } else {
                    let given = store::consent(tx, s.user_id, client.id)?.unwrap_or_default();
                    let covered = scopes(&scope).iter().all(|x| scopes(&given).contains(x));
                    if !covered || prompts.contains(&"consent") {
                        if prompts.contains(&"none") {
                            return error("consent_required", "consent", "consent required");
                        }
                        return Ok(Authorize::Consent {
                            client: client.name.clone(),
                            scopes: scopes(&scope).iter().map(|x| x.to_string()).collect(),
                        });
                    }
                }
            }
            let (_, code) = store::add_code(
                tx,
                &store::Code {
                    id: 0,
                    client_id: client.id,
                    user_id: s.user_id,
                    redirect_uri: req.redirect_uri.clone(),
                    scope: scope.clone(),
                    nonce: req.nonce.clone(),
                    code_challenge: req.code_challenge.clone(),
                    factors: factors.clone(),
                    auth_time,
                    expires_at: now + CODE_TTL,
                    used_at: None,
                },
                now,
            )?;
            audit::record(
                tx,
                &peer_entry(event, Outcome::Success, peer)
                    .username(&s.user.username)
                    .user(s.user_id, s.org_id)
                    .detail(json!({"client": client.name, "scope": scope, "amr": amr(&factors)})),
                now,
            )?;
            Ok(back(&[("code", &code)]))
        })
    }

    /// Step-up of the browser's session (after [`Authorize::StepUp`]): a second-factor
    /// flow for its user, answered like a login step (`second_factor_required`, with the
    /// passkey challenge when passkeys are on); the factor's step then replaces the
    /// session by one with the factor added ([`login::step_up_step`]).
    pub fn oidc_step_up(&self, peer: &Peer, session_token: &str) -> Result<Decision<Status>> {
        let now = self.now();
        let rp = self.relying_party();
        self.with_conn(|conn, key| {
            let d = login::step_up_step(conn, key, peer, session_token, now)?;
            crate::passkey::decorate(conn, rp.as_deref(), peer, d, now)
        })
    }

    /// The token endpoint: a code exchange or a refresh. Refusals are committed with
    /// their audit row (and, for a replayed code or refresh token, the grant's
    /// revocation) and answered as `Ok(Err(OAuthError))`.
    pub fn oidc_token(
        &self,
        issuer: &str,
        auth: &ClientAuth,
        req: &TokenRequest,
        peer: &Peer,
    ) -> Result<std::result::Result<Tokens, OAuthError>> {
        ensure_keys(self)?;
        let event = AuditEvent::OidcToken;
        self.write(|tx, key, now| {
            let refuse = |reason: &str, user: Option<i64>, e: OAuthError| {
                let mut en = peer_entry(event, Outcome::Failure, peer)
                    .reason(reason)
                    .detail(json!({"client_id": auth.client_id, "grant_type": req.grant_type}));
                if let Some(u) = user {
                    if let Ok(u) = users::by_id(tx, u) {
                        en = en.username(&u.username).user(u.id, u.org_id);
                    }
                }
                audit::record(tx, &en, now).map(|_| Err(e))
            };
            let Some(client) = authenticate_client(tx, auth)? else {
                return refuse("client_auth", None, OAuthError::invalid_client());
            };
            let (code, nonce, with_refresh) = match req.grant_type.as_str() {
                "authorization_code" => {
                    let Some(code) = store::find_code(tx, req.code.as_deref().unwrap_or(""))?
                    else {
                        return refuse("unknown_code", None, OAuthError::invalid_grant("bad code"));
                    };
                    let user = Some(code.user_id);
                    if code.client_id != client.id {
                        return refuse("other_client", user, OAuthError::invalid_grant("bad code"));
                    }
                    if code.used_at.is_some() || !store::use_code(tx, code.id, now)? {
                        let n = store::revoke_grant(tx, code.id, now)?;
                        return refuse(
                            &format!("code_reused revoked={n}"),
                            user,
                            OAuthError::invalid_grant("the code was used already"),
                        );
                    }
                    if code.expires_at <= now {
                        return refuse(
                            "code_expired",
                            user,
                            OAuthError::invalid_grant("the code has expired"),
                        );
                    }
                    if req.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
                        return refuse(
                            "redirect_uri_mismatch",
                            user,
                            OAuthError::invalid_grant("redirect_uri differs"),
                        );
                    }
                    let pkce_ok = match (&code.code_challenge, &req.code_verifier) {
                        (Some(c), Some(v)) => {
                            (43..=128).contains(&v.len())
                                && crypto::ct_eq(pkce_s256(v).as_bytes(), c.as_bytes())
                        }
                        (None, None) => true,
                        _ => false,
                    };
                    if !pkce_ok {
                        return refuse(
                            "pkce",
                            user,
                            OAuthError::invalid_grant("PKCE verification failed"),
                        );
                    }
                    let nonce = code.nonce.clone();
                    (code, nonce, true)
                }
                "refresh_token" => {
                    let t = store::find_token(tx, req.refresh_token.as_deref().unwrap_or(""))?
                        .filter(|t| t.kind == TokenKind::Refresh);
                    let Some(t) = t else {
                        return refuse(
                            "unknown_refresh_token",
                            None,
                            OAuthError::invalid_grant("bad refresh token"),
                        );
                    };
                    let user = Some(t.user_id);
                    if t.client_id != client.id {
                        return refuse(
                            "other_client",
                            user,
                            OAuthError::invalid_grant("bad refresh token"),
                        );
                    }
                    if t.revoked_at.is_some() || t.expires_at <= now {
                        return refuse(
                            "refresh_token_dead",
                            user,
                            OAuthError::invalid_grant("bad refresh token"),
                        );
                    }
                    if t.used_at.is_some() || !store::use_token(tx, t.id, now)? {
                        let n = store::revoke_grant(tx, t.grant_id, now)?;
                        return refuse(
                            &format!("refresh_reused revoked={n}"),
                            user,
                            OAuthError::invalid_grant("the refresh token was used already"),
                        );
                    }
                    let Some(mut code) = store::code_by_id(tx, t.grant_id)? else {
                        return refuse("no_grant", user, OAuthError::invalid_grant("bad grant"));
                    };
                    code.scope = t.scope;
                    (code, None, true)
                }
                _ => {
                    return refuse(
                        "grant_type",
                        None,
                        OAuthError::new(400, "unsupported_grant_type", "unsupported grant_type"),
                    )
                }
            };
            if !user_active(tx, code.user_id, now)? {
                store::revoke_grant(tx, code.id, now)?;
                return refuse(
                    "user_inactive",
                    Some(code.user_id),
                    OAuthError::invalid_grant("the account cannot sign in"),
                );
            }
            let tokens = issue(
                tx,
                key,
                issuer,
                &client,
                &code,
                nonce.as_deref(),
                with_refresh,
                now,
            )?;
            let u = users::by_id(tx, code.user_id)?;
            audit::record(
                tx,
                &peer_entry(event, Outcome::Success, peer)
                    .username(&u.username)
                    .user(u.id, u.org_id)
                    .detail(json!({
                        "client": client.name, "grant_type": req.grant_type,
                        "scope": code.scope, "refresh": tokens.refresh_token.is_some(),
                    })),
                now,
            )?;
            Ok(Ok(tokens))
        })
    }

    /// The userinfo endpoint: the claims of a live access token's scope, or None (401).
    /// Every answer is audited (on the token's user, with its client and scope).
    pub fn oidc_userinfo(&self, issuer: &str, token: &str, peer: &Peer) -> Result<Option<Value>> {
        let event = AuditEvent::OidcUserinfo;
        self.write(|tx, key, now| {
            let refused = |reason| -> Result<Option<Value>> {
                audit::record(
                    tx,
                    &peer_entry(event, Outcome::Failure, peer).reason(reason),
                    now,
                )?;
                Ok(None)
            };
            let Some(claims) = verify(tx, key, issuer, token, true, now)? else {
                return refused("bad_token");
            };
            let jti = claims["jti"].as_str().unwrap_or("");
            let t = match store::find_token(tx, jti)? {
                Some(t) if t.kind == TokenKind::Access && t.revoked_at.is_none() => t,
                Some(_) => return refused("revoked"),
                None => return refused("unknown_token"),
            };
            if !user_active(tx, t.user_id, now)? {
                return refused("user_inactive");
            }
            let client = store::client_by_id(tx, t.client_id)?.map(|c| c.name);
            let e = peer_entry(event, Outcome::Success, peer)
                .detail(json!({ "client": client, "scope": t.scope }));
            audit::record(tx, &on_user(tx, e, t.user_id)?, now)?;
            Ok(Some(user_claims(tx, t.user_id, &t.scope)?))
        })
    }

    /// Revocation (RFC 7009): the client's own token (a refresh token revokes its whole
    /// grant). Ok(false): the client failed to authenticate.
    pub fn oidc_revoke(
        &self,
        issuer: &str,
        auth: &ClientAuth,
        token: &str,
        peer: &Peer,
    ) -> Result<bool> {
        let event = AuditEvent::OidcRevoke;
        self.write(|tx, key, now| {
            let Some(client) = authenticate_client(tx, auth)? else {
                audit::record(
                    tx,
                    &peer_entry(event, Outcome::Failure, peer).reason("client_auth"),
                    now,
                )?;
                return Ok(false);
            };
            if let Some(t) = lookup_token(tx, key, issuer, token, now)? {
                if t.client_id == client.id {
                    let n = match t.kind {
                        TokenKind::Refresh => store::revoke_grant(tx, t.grant_id, now)?,
                        TokenKind::Access => {
                            store::revoke_token(tx, t.id, now)?;
                            1
                        }
                    };
                    let e = peer_entry(event, Outcome::Success, peer)
                        .detail(json!({"client": client.name, "revoked": n}));
                    audit::record(tx, &on_user(tx, e, t.user_id)?, now)?;
                } else {
                    // Another client's token: nothing revoked (answered 200 all the same,
                    // RFC 7009 2.2), but the refusal is audited.
                    let e = peer_entry(event, Outcome::Failure, peer)
                        .reason("other_client")
                        .detail(json!({"client": client.name}));
                    audit::record(tx, &on_user(tx, e, t.user_id)?, now)?;
                }
            }
            Ok(true)
        })
    }

    /// Introspection (RFC 7662) of a token issued to the calling client, which must be
    /// a confidential one (a public client has no secret to prove itself with: refused,
    /// reason `public_client`). None: the client failed to authenticate. Every call is
    /// audited: a success row naming the client and whether the token was active (on
    /// the token's user when it was found), or a failure row.
    pub fn oidc_introspect(
        &self,
        issuer: &str,
        auth: &ClientAuth,
        token: &str,
        peer: &Peer,
    ) -> Result<Option<Value>> {
        let event = AuditEvent::OidcIntrospect;
        self.write(|tx, key, now| {
            let client = match authenticate_client(tx, auth)? {
                Some(c) if !c.public => c,
                found => {
                    let e = peer_entry(event, Outcome::Failure, peer);
                    let e = match found {
                        Some(c) => e
                            .reason("public_client")
                            .detail(json!({ "client": c.name })),
                        None => e.reason("client_auth"),
                    };
                    audit::record(tx, &e, now)?;
                    return Ok(None);
                }
            };
            let found = lookup_token(tx, key, issuer, token, now)?;
            let inactive = Some(json!({"active": false}));
            let answered = |active| {
                peer_entry(event, Outcome::Success, peer)
                    .detail(json!({ "client": client.name, "active": active }))
            };
            let Some(t) = found else {
                audit::record(tx, &answered(false), now)?;
                return Ok(inactive);
            };
            if t.client_id != client.id {
                // Another client's token: answered inactive, the refusal audited.
                let e = peer_entry(event, Outcome::Failure, peer)
                    .reason("other_client")
                    .detail(json!({ "client": client.name }));
                audit::record(tx, &on_user(tx, e, t.user_id)?, now)?;
                return Ok(inactive);
            }
            if t.revoked_at.is_some()
                || t.used_at.is_some()
                || t.expires_at <= now
                || !user_active(tx, t.user_id, now)?
            {
                audit::record(tx, &on_user(tx, answered(false), t.user_id)?, now)?;
                return Ok(inactive);
            }
            audit::record(tx, &on_user(tx, answered(true), t.user_id)?, now)?;
            let u = users::by_id(tx, t.user_id)?;
            Ok(Some(json!({
                "active": true, "scope": t.scope, "client_id": client.client_id,
                "username": u.username, "sub": u.id.to_string(), "iss": issuer,
                "aud": client.client_id, "iat": t.created_at, "exp": t.expires_at,
                "token_type": match t.kind { TokenKind::Access => "access_token",
                                             TokenKind::Refresh => "refresh_token" },
            })))
        })
    }

    /// RP-initiated logout: from a valid ID token of ours (expired is fine), its user id
    /// and, when `post_logout_redirect_uri` is one its client registered, where to go
    /// after (with `state`). None: no usable hint.
    pub fn oidc_logout_hint(
        &self,
        issuer: &str,
        id_token_hint: &str,
        post_logout_redirect_uri: Option<&str>,
        state: Option<&str>,
    ) -> Result<Option<(i64, Option<String>)>> {
        let now = self.now();
        self.with_conn(|c, key| {
            let Some(claims) = verify(c, key, issuer, id_token_hint, false, now)? else {
                return Ok(None);
            };
            let Some(user) = claims["sub"].as_str().and_then(|s| s.parse::<i64>().ok()) else {
                return Ok(None);
            };
            let aud = claims["aud"].as_str().unwrap_or("");
            let to = match (
                store::client_by_client_id(c, aud)?,
                post_logout_redirect_uri,
            ) {
                (Some(cl), Some(u)) if cl.redirect_uris.iter().any(|r| r == u) => {
                    Some(match state {
                        Some(s) => with_query(u, &[("state", s)]),
                        None => u.to_string(),
                    })
                }
                _ => None,
            };
            Ok(Some((user, to)))
        })
    }

    /// Audit a request refused before any decision here (a malformed form, a repeated
    /// parameter, a bad or doubled client authentication, no Bearer token): `event`
    /// failed for `reason`, with the `client_id` the request named, if any.
    pub fn oidc_refused(
        &self,
        event: AuditEvent,
        reason: &str,
        client_id: Option<&str>,
        peer: &Peer,
    ) -> Result<()> {
        self.write(|tx, _, now| {
            let mut e = peer_entry(event, Outcome::Failure, peer).reason(reason);
            if let Some(c) = client_id.filter(|c| !c.is_empty()) {
                e = e.detail(json!({ "client_id": c }));
            }
            audit::record(tx, &e, now)?;
            Ok(())
        })
    }

    /// Audit an RP-initiated logout (the session's end is the portal's logout).
    pub fn oidc_logout_audit(&self, s: &SessionInfo, peer: &Peer) -> Result<()> {
        self.write(|tx, _, now| {
            audit::record(
                tx,
                &peer_entry(AuditEvent::OidcLogout, Outcome::Success, peer)
                    .username(&s.user.username)
                    .user(s.user_id, s.org_id),
                now,
            )?;
            Ok(())
        })
    }
}

impl Client {
    /// The registered URI equal to `uri` (the stored one: what was checked is what is
    /// used).
    fn redirect_uri_of(&self, uri: &str) -> String {
        self.redirect_uris
            .iter()
            .find(|u| *u == uri)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_way_back_after_a_sign_in_asks_for_none_again() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            after_sign_in(&q(&[
                ("client_id", "c"),
                ("prompt", "login"),
                ("max_age", "0"),
                ("state", "s")
            ])),
            q(&[("client_id", "c"), ("state", "s")])
        );
        assert_eq!(
            after_sign_in(&q(&[("prompt", "login consent"), ("max_age", "300")])),
            q(&[("prompt", "consent"), ("max_age", "300")])
        );
        assert_eq!(
            after_sign_in(&q(&[("prompt", "consent  login"), ("max_age", "00")])),
            q(&[("prompt", "consent")])
        );
        // Nothing else is touched, a bad max_age included (the decision refuses it).
        let other = q(&[
            ("prompt", "consent"),
            ("max_age", "soon"),
            ("scope", "openid"),
        ]);
        assert_eq!(after_sign_in(&other), other);
    }

    #[test]
    fn amr_and_acr_follow_the_factors() {
        assert_eq!(amr("pwd"), vec!["pwd"]);
        assert_eq!(acr("pwd"), ACR_PWD);
        assert_eq!(amr("pwd totp"), vec!["pwd", "otp", "mfa"]);
        assert_eq!(amr("pwd device"), vec!["pwd", "mfa"]);
        assert_eq!(
            acr("pwd device"),
            ACR_DEVICE,
            "a remembered device is no factor given"
        );
        assert_eq!(acr("pwd totp"), ACR_MFA);
        assert_eq!(acr(crate::login::PASSWORDLESS), ACR_MFA);
        assert_eq!(acr("pwd email"), ACR_MFA);
        assert_eq!(amr(""), Vec::<&str>::new());
    }

    /// Every algorithm's new key signs, publishes its public half only (ES256: `kty` EC,
    /// `crv` P-256) and verifies through that JWK — and not another key's signature.
    #[test]
    fn every_signing_algorithm_signs_and_verifies_through_its_jwk() {
        for &name in ID_TOKEN_ALGS {
            let alg = alg_of(name).unwrap();
            let signer = |der: &[u8], kid: &str| Signer {
                kid: kid.to_string(),
                alg,
                key: encoding_key(alg, der),
            };
            let (kid, der) = generate(name).unwrap();
            let s = signer(&der, &kid);
            let jwt = sign(&s, &json!({"sub": "1"})).unwrap();
            let jwk = public_jwk(&s).unwrap();
            let v = serde_json::to_value(&jwk).unwrap();
            assert_eq!(v["kid"], kid.as_str());
            assert!(v.get("d").is_none(), "{name}: no private part in {v}");
            if name == "ES256" {
                assert_eq!(
                    (v["kty"].as_str(), v["crv"].as_str()),
                    (Some("EC"), Some("P-256"))
                );
            }
            let dk = DecodingKey::from_jwk(&jwk).unwrap();
            let mut val = Validation::new(alg);
            val.required_spec_claims.clear();
            val.validate_exp = false;
            assert!(
                jsonwebtoken::decode::<Value>(&jwt, &dk, &val).is_ok(),
                "{name}"
            );
            let (_, other) = generate(name).unwrap();
            let forged = sign(&signer(&other, &kid), &json!({"sub": "1"})).unwrap();
            assert!(
                jsonwebtoken::decode::<Value>(&forged, &dk, &val).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn acr_values_ask_for_the_weakest_class_they_list() {
        assert_eq!(acr_wanted(ACR_MFA), Some(ACR_MFA));
        assert_eq!(
            acr_wanted(&format!("{ACR_MFA} {ACR_DEVICE}")),
            Some(ACR_DEVICE)
        );
        assert_eq!(
            acr_wanted(&format!("urn:other {ACR_PWD} {ACR_MFA}")),
            Some(ACR_PWD)
        );
        assert_eq!(acr_wanted("urn:other"), None);
        assert_eq!(acr_wanted(""), None);
        assert!(acr_rank(ACR_DEVICE) < acr_rank(ACR_MFA));
        assert!(acr_rank(ACR_PWD) < acr_rank(ACR_DEVICE));
    }

    #[test]
    fn redirect_uris_to_register() {
        for ok in ["https://app.example.org/cb", "http://127.0.0.1:8000/cb?x=1"] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "app.example.org/cb",
            "javascript://x",
            "https://a@app.example.org/cb",
            "https://app.example.org/cb#f",
            "https://app.example.org/c b",
            "https:///cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(
            with_query("https://a/cb", &[("code", "x y")]),
            "https://a/cb?code=x+y"
        );
        assert_eq!(
            with_query("https://a/cb?k=1", &[("s", "&")]),
            "https://a/cb?k=1&s=%26"
        );
    }
}
