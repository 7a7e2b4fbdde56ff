//! OpenID Connect over HTTP, for relying parties: discovery, the JWKS, the token,
//! userinfo, revocation (RFC 7009) and introspection (RFC 7662) endpoints. The browser's
//! side (authorization, consent, logout) is the portal's (portal/oidc.rs). Every
//! decision is the core's (`authcore::oidc`); this module parses forms and headers and
//! answers in OAuth's JSON.
//!
//! The issuer is `--public-url` (origin and path); without one, `http://` and the
//! request's Host (for trying authd out locally — relying parties need a stable issuer).

use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, PRAGMA};
use hyper::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use authcore::kinds::AuditEvent;
use authcore::oidc::{self, ClientAuth, OAuthError, TokenRequest};

use crate::app::{json_resp, ApiError, App, Req, Resp};

/// The issuer identifier: `--public-url`, else `http://HOST`.
pub fn issuer(app: &App, headers: &HeaderMap) -> String {
    match &app.config.public_url {
        Some(p) => format!("{}{}", p.origin, p.base),
        None => {
            let host = headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(app: &App, req: Req) -> Result<Resp, ApiError> {
    let iss = issuer(app, &req.headers);
    let doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oidc/authorize"),
        "token_endpoint": format!("{iss}/oidc/token"),
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "jwks_uri": format!("{iss}/oidc/jwks"),
        "revocation_endpoint": format!("{iss}/oidc/revoke"),
        "introspection_endpoint": format!("{iss}/oidc/introspect"),
        "end_session_endpoint": format!("{iss}/oidc/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": oidc::ID_TOKEN_ALGS,
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": oidc::SCOPES,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr",
            "acr", "azp", "preferred_username", "name", "email", "email_verified", "groups",
            "org"],
        "prompt_values_supported": ["none", "login", "consent"],
        "acr_values_supported": oidc::ACRS,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    });
    Ok(json_resp(StatusCode::OK, &doc))
}

/// `GET /oidc/jwks`.
pub async fn jwks(app: &App) -> Result<Resp, ApiError> {
    let set = app.call(|core| core.oidc_jwks()).await?;
    Ok(json_resp(StatusCode::OK, &set))
}

/// A request refused before the core decides anything: the audit row's reason, the
/// `client_id` it named (if any) and the OAuth error to answer.
struct Refusal {
    reason: &'static str,
    client_id: Option<String>,
    error: OAuthError,
}

fn invalid_request(reason: &'static str, description: &str) -> Refusal {
    Refusal {
        reason,
        client_id: None,
        error: OAuthError {
            status: 400,
            error: "invalid_request",
            description: description.to_string(),
        },
    }
}

/// The credentials of an HTTP Basic `Authorization` header (RFC 6749 2.3.1: both parts
/// form-encoded): None without one, `Some(None)` when it does not decode.
fn basic_credentials(req: &Req) -> Option<Option<(String, String)>> {
    let (scheme, b) = req
        .headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let dec = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some(
        data_encoding::BASE64
            .decode(b.trim().as_bytes())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|d| d.split_once(':').map(|(id, secret)| (dec(id), dec(secret)))),
    )
}

/// Answer a [`Refusal`], with its audit row (`event` failed; the client the body or the
/// Basic header named, if any).
async fn refused(app: &App, req: &Req, event: AuditEvent, r: Refusal) -> Result<Resp, ApiError> {
    let peer = req.client.clone();
    let Refusal {
        reason,
        client_id,
        error,
    } = r;
    let client_id = client_id.or_else(|| basic_credentials(req).flatten().map(|(id, _)| id));
    app.call(move |core| core.oidc_refused(event, reason, client_id.as_deref(), &peer))
        .await?;
    Ok(oauth_error(&error))
}

/// The parameters of a form body, each at most once (RFC 6749 3.1: a repeated one is an
/// error), or the refusal to answer.
fn form(req: &Req) -> Result<Vec<(String, String)>, Refusal> {
    let ct = req
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(invalid_request(
            "content_type",
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    if std::str::from_utf8(&req.body).is_err() {
        return Err(invalid_request("not_utf8", "the body is not valid UTF-8"));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(k2, _)| k2 == k) {
            let mut r = invalid_request(
                "repeated_parameter",
                &format!("the parameter {k} is repeated"),
            );
            r.client_id = param(&pairs, "client_id");
            return Err(r);
        }
    }
    Ok(pairs)
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// The client's authentication: HTTP Basic ([`basic_credentials`]), or `client_id` (+ `client_secret`) in the body; never both.
fn client_auth(req: &Req, pairs: &[(String, String)]) -> Result<ClientAuth, Refusal> {
    let basic = basic_credentials(req);
    let body_secret = param(pairs, "client_secret");
    let body_id = param(pairs, "client_id");
    match basic {
        Some(b) => {
            if body_secret.is_some() {
                let mut r =
                    invalid_request("two_client_auths", "more than one client authentication");
                r.client_id = body_id;
                return Err(r);
            }
            let Some((id, secret)) = b else {
                return Err(Refusal {
                    reason: "basic_header",
                    client_id: body_id,
                    error: invalid_client(),
                });
            };
            if body_id.as_ref().is_some_and(|b| *b != id) {
                return Err(Refusal {
                    reason: "client_id_mismatch",
                    client_id: Some(id),
                    error: invalid_client(),
                });
            }
            Ok(ClientAuth {
                client_id: id,
                secret: Some(secret),
            })
        }
        None => Ok(ClientAuth {
            client_id: body_id.unwrap_or_default(),
            secret: body_secret,
        }),
    }
}

fn invalid_client() -> OAuthError {
    OAuthError {
        status: 401,
        error: "invalid_client",
        description: "client authentication failed".into(),
    }
}

fn no_store(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn oauth_error(e: &OAuthError) -> Resp {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = no_store(json_resp(
        status,
        &json!({"error": e.error, "error_description": e.description}),
    ));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"authd\""),
        );
    }
    r
}

/// `POST /oidc/token`.
pub async fn token(app: &App, req: Req) -> Result<Resp, ApiError> {
    let event = AuditEvent::OidcToken;
    let pairs = match form(&req) {
        Ok(p) => p,
        Err(r) => return refused(app, &req, event, r).await,
    };
    let auth = match client_auth(&req, &pairs) {
        Ok(a) => a,
        Err(r) => return refused(app, &req, event, r).await,
    };
    let tr = TokenRequest {
        grant_type: param(&pairs, "grant_type").unwrap_or_default(),
        code: param(&pairs, "code"),
        redirect_uri: param(&pairs, "redirect_uri"),
        code_verifier: param(&pairs, "code_verifier"),
        refresh_token: param(&pairs, "refresh_token"),
    };
    let iss = issuer(app, &req.headers);
    let peer = req.client.clone();
    let answer = app
        .call(move |core| core.oidc_token(&iss, &auth, &tr, &peer))
        .await?;
    Ok(match answer {
        Ok(tokens) => no_store(json_resp(StatusCode::OK, &tokens)),
        Err(e) => oauth_error(&e),
    })
}

/// `GET|POST /oidc/userinfo` with a Bearer access token.
pub async fn userinfo(app: &App, req: Req) -> Result<Resp, ApiError> {
    let refused = |desc: &'static str| {
        let mut r = json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_token", "error_description": desc}),
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        r
    };
    let Some(token) = req.bearer().map(str::to_string) else {
        let peer = req.client.clone();
        app.call(move |core| core.oidc_refused(AuditEvent::OidcUserinfo, "no_token", None, &peer))
            .await?;
        return Ok(refused("a Bearer access token is required"));
    };
    let iss = issuer(app, &req.headers);
    let peer = req.client.clone();
    let claims: Option<Value> = app
        .call(move |core| core.oidc_userinfo(&iss, &token, &peer))
        .await?;
    Ok(match claims {
        Some(c) => no_store(json_resp(StatusCode::OK, &c)),
        None => refused("the access token is invalid, expired or revoked"),
    })
}

/// A revocation or introspection request: the client's authentication, the token, the
/// issuer and the peer; or the OAuth error to answer.
fn token_request(
    app: &App,
    req: &Req,
) -> Result<(ClientAuth, String, String, authcore::login::Client), Refusal> {
    let p = form(req)?;
    let auth = client_auth(req, &p)?;
    let token = param(&p, "token").unwrap_or_default();
    Ok((auth, token, issuer(app, &req.headers), req.client.clone()))
}

/// `POST /oidc/revoke` (RFC 7009): 200 whatever the token was.
pub async fn revoke(app: &App, req: Req) -> Result<Resp, ApiError> {
    let (auth, token, iss, peer) = match token_request(app, &req) {
        Ok(t) => t,
        Err(r) => return refused(app, &req, AuditEvent::OidcRevoke, r).await,
    };
    let ok = app
        .call(move |core| core.oidc_revoke(&iss, &auth, &token, &peer))
        .await?;
    Ok(if ok {
        no_store(json_resp(StatusCode::OK, &json!({})))
    } else {
        oauth_error(&invalid_client())
    })
}

/// `POST /oidc/introspect` (RFC 7662): the calling client's own tokens only.
pub async fn introspect(app: &App, req: Req) -> Result<Resp, ApiError> {
    let (auth, token, iss, peer) = match token_request(app, &req) {
        Ok(t) => t,
        Err(r) => return refused(app, &req, AuditEvent::OidcIntrospect, r).await,
    };
    let answer = app
        .call(move |core| core.oidc_introspect(&iss, &auth, &token, &peer))
        .await?;
    Ok(match answer {
        Some(v) => no_store(json_resp(StatusCode::OK, &v)),
        None => oauth_error(&invalid_client()),
    })
}
