//! Issue 17: the OpenID Connect token endpoint — code exchanges per second at 16 clients
//! (client_secret_basic, PKCE; each exchange signs an access token and an ID token with
//! RS256), against the ceiling of the same signature in a loop on every core, in-process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION};
use hyper::Method;

use crate::load::{self, Spec, Workload};
use crate::report::{num, Figure};
use crate::{provision, secs, Bench};

/// RFC 7636's example: the same verifier for every code.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example.org/cb";

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One request on a connection of its own: (status, Location, body).
async fn one(addr: SocketAddr, req: load::Request) -> Result<(u16, String, Bytes)> {
    let mut s = load::connect(addr, None).await?;
    s.ready().await?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, loc, body))
}

/// `POST /oidc/token` of the code `seq`, until the codes run out.
struct Exchange {
    codes: Vec<String>,
    basic: HeaderValue,
}

impl Workload for Exchange {
    fn request(&self, _client: usize, seq: u64) -> Option<load::Request> {
        let code = self.codes.get(seq as usize)?;
        let body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={VERIFIER}",
            q(code),
            q(REDIRECT)
        );
        let mut r = load::request(Method::POST, "/oidc/token", Some(body));
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(AUTHORIZATION, self.basic.clone());
        Some(r)
    }
    fn check(&self, _client: usize, _seq: u64, status: u16, body: &[u8]) -> bool {
        status == 200 && body.windows(8).any(|w| w == b"id_token")
    }
}

impl Bench {
    pub(crate) fn oidc(&mut self) -> Result<()> {
        eprintln!("== OpenID Connect token endpoint (issue 17)");
        let db = self.password_db()?;
        let (n_codes, run_secs) = if self.quick {
            (600, 10.0)
        } else {
            (6000, 30.0)
        };
        let client = {
            let core = authcore::Core::open(
                &authcore::db::Location::new(&db, None),
                authcore::password::Hashing::new(1),
                authcore::Core::system_clock(),
            )?;
            let actor = authcore::admin::Actor::operator("authbench");
            let name = format!("bench-{}", std::process::id());
            core.oidc_client_add(
                &actor,
                &name,
                &[REDIRECT.to_string()],
                false,
                true,
                &[],
                "RS256",
            )?
        };
        let secret = client.client_secret.clone().unwrap_or_default();
        let basic = HeaderValue::from_str(&format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{}:{secret}", client.client_id).as_bytes())
        ))?;
        let d = self.authd(&db, &["--insecure-cookies"], "oidc")?;
        let addr = d.addr;
        // A session (a real sign-in), then the codes, issued just before the run (they
        // live 60 s).
        let user = provision::real_user(0);
        let login = load::post_json(
            "/v1/login",
            &serde_json::json!({"username": user, "password": provision::PASSWORD}),
        );
        let (status, _, body) = self.rt.block_on(one(addr, login))?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(session) = v["session"].as_str().map(str::to_string) else {
            bail!("the bench user did not sign in ({status}): {v}");
        };
        let path = format!(
            "/oidc/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile%20email&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256",
            client.client_id,
            q(REDIRECT)
        );
        let cookie = HeaderValue::from_str(&format!("authd_session={session}"))?;
        let t0 = Instant::now();
        let codes: Vec<String> = self.rt.block_on(async {
            let mut codes = Vec::with_capacity(n_codes);
            for _ in 0..n_codes {
                let mut r = load::request(Method::GET, &path, None);
                r.headers_mut().insert(COOKIE, cookie.clone());
                let (_, loc, _) = one(addr, r).await?;
                let code = loc
                    .split_once("code=")
                    .and_then(|(_, c)| c.split('&').next())
                    .context("no code in the authorization answer")?;
                codes.push(code.to_string());
            }
            Ok::<_, anyhow::Error>(codes)
        })?;
        eprintln!(
            "  {} codes in {:.1} s",
            codes.len(),
            t0.elapsed().as_secs_f64()
        );
        let spec = Spec::new(16, secs(run_secs)).max(codes.len() as u64);
        let stats = self.load(
            addr,
            &spec,
            Arc::new(Exchange { codes, basic }),
            "token endpoint, 16 clients",
        )?;
        self.stop(d)?;
        let (ceiling, sign_ms) = self.signing_ceiling(run_secs.min(10.0))?;
        // Each exchange signs two tokens.
        let per_exchange = ceiling / 2.0;
        self.fig(
            Figure::new(
                8,
                "oidc_token_exchanges_per_s",
                "Token endpoint: code exchanges per second, 16 clients",
                stats.rate(),
                "/s",
            )
            .vs(
                per_exchange,
                "RS256 signing ceiling ÷ 2 (access + ID token)",
            )
            .info("near the ceiling")
            .note(&format!(
                "{}; p50 {} ms, p99 {} ms; RS256-2048 signs {} /s on {} cores ({} ms each)",
                stats.summary(),
                num(stats.p50(), "ms"),
                num(stats.p99(), "ms"),
                num(ceiling, "/s"),
                self.cores,
                num(sign_ms, "ms"),
            )),
        );
        Ok(())
    }

    /// RS256 (RSA-2048) signatures of a token-sized claim set in a loop on every core, for
    /// `secs` seconds: (signatures/s, ms per signature on one core).
    fn signing_ceiling(&self, dur: f64) -> Result<(f64, f64)> {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(
            &mut getrandom::rand_core::UnwrapErr(getrandom::SysRng),
            2048,
        )?;
        let der = key.to_pkcs1_der()?.as_bytes().to_vec();
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&der);
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        let claims = serde_json::json!({
            "iss": "https://auth.example.org", "sub": "1", "aud": "client", "iat": 1,
            "exp": 2, "jti": "x".repeat(43), "scope": "openid profile email",
        });
        let count = AtomicU64::new(0);
        let deadline = Instant::now() + secs(dur);
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..self.cores {
                s.spawn(|| {
                    while Instant::now() < deadline {
                        if jsonwebtoken::encode(&header, &claims, &key).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let n = count.load(Ordering::Relaxed) as f64;
        let rate = n / started.elapsed().as_secs_f64();
        Ok((rate, 1000.0 * self.cores as f64 / rate.max(1e-9)))
    }
}
