#!/usr/bin/env python3
"""A real OpenID Connect relying party against authd: Authlib's OAuth 2 client (requests)
and Authlib's JOSE doing what an application does, driven by tests/it/oidc.rs.

    rp.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI SESSION_COOKIE=TOKEN

Discovery; the authorization request with PKCE (S256), a nonce and state, on the browser
session the test signed in (the cookie); the code exchange (client_secret_basic); the ID
token verified against the JWKS (signature, iss, aud, nonce, exp, auth_time; RS256,
EdDSA or ES256, whichever the client was registered with), and the same token signed by
another key of that kind refused; userinfo;
introspection; a refresh (rotated) and the old refresh token replayed (refused, and its
family revoked); revocation. Prints one JSON document of what it saw; exits non-zero,
naming the step, on any failure. Every request is bounded by a timeout.
"""

import json
import secrets
import sys
import time
import warnings
from urllib.parse import parse_qs, urlparse

warnings.simplefilter("ignore")

import requests  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.jose import JsonWebKey, jwt  # noqa: E402
from authlib.oidc.core import CodeIDToken  # noqa: E402

TIMEOUT = 20


def fail(step, detail):
    print(f"rp.py: {step}: {detail}", file=sys.stderr)
    sys.exit(1)


def main():
    issuer, client_id, client_secret, redirect_uri, cookie = sys.argv[1:6]
    cookie_name, cookie_value = cookie.split("=", 1)
    seen = {}

    # Discovery.
    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    if meta["issuer"] != issuer:
        fail("discovery", f"issuer {meta['issuer']} != {issuer}")
    seen["algs"] = meta["id_token_signing_alg_values_supported"]
    jwks = requests.get(meta["jwks_uri"], timeout=TIMEOUT).json()
    keys = JsonWebKey.import_key_set(jwks)
    seen["jwks_kty"] = sorted(k["kty"] for k in jwks["keys"])

    client = OAuth2Session(
        client_id,
        client_secret,
        scope="openid profile email groups offline_access",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )

    # The browser's part: the portal session signs the request in.
    r = requests.get(
        url, cookies={cookie_name: cookie_value}, allow_redirects=False, timeout=TIMEOUT
    )
    if r.status_code not in (302, 303):
        fail("authorize", f"{r.status_code} {r.text[:300]}")
    location = r.headers["Location"]
    if not location.startswith(redirect_uri + "?"):
        fail("authorize", f"redirected to {location}")
    q = parse_qs(urlparse(location).query)
    if q.get("state") != [state] or q.get("iss") != [issuer]:
        fail("authorize", f"state/iss wrong in {location}")

    token = client.fetch_token(
        meta["token_endpoint"],
        authorization_response=location,
        code_verifier=verifier,
        timeout=TIMEOUT,
    )
    for k in ("access_token", "id_token", "refresh_token"):
        if k not in token:
            fail("token", f"no {k} in {token}")

    # The ID token, verified as an application verifies it.
    claims = jwt.decode(
        token["id_token"],
        keys,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": issuer}},
        claims_params={"nonce": nonce, "client_id": client_id},
    )
    claims.validate(now=int(time.time()))
    seen["id_token_alg"] = claims.header["alg"]
    # The same claims and header (alg, kid) signed by another key of the same kind: the
    # JWKS must not verify it.
    kind = {"RS256": ("RSA", 2048), "EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}
    kty, crv = kind[claims.header["alg"]]
    other = JsonWebKey.generate_key(kty, crv, is_private=True)
    forged = jwt.encode({"alg": claims.header["alg"], "kid": claims.header["kid"]},
                        dict(claims), other)
    try:
        jwt.decode(forged, keys, claims_cls=CodeIDToken,
                   claims_params={"nonce": nonce, "client_id": client_id})
        seen["forged_id_token_refused"] = False
    except Exception:  # noqa: BLE001 (authlib raises BadSignatureError)
        seen["forged_id_token_refused"] = True
    seen["id_token"] = {k: claims.get(k) for k in
                        ("sub", "preferred_username", "email", "groups", "org", "amr", "acr")}

    info = client.get(meta["userinfo_endpoint"], timeout=TIMEOUT)
    if info.status_code != 200:
        fail("userinfo", f"{info.status_code} {info.text}")
    seen["userinfo"] = info.json()
    if seen["userinfo"]["sub"] != claims["sub"]:
        fail("userinfo", "sub differs from the ID token's")

    intro = client.introspect_token(
        meta["introspection_endpoint"], token=token["access_token"], timeout=TIMEOUT
    ).json()
    seen["introspect_access"] = intro

    # Refresh: a new pair; the old refresh token replayed is refused and revokes the family.
    old_refresh = token["refresh_token"]
    new = client.refresh_token(meta["token_endpoint"], refresh_token=old_refresh, timeout=TIMEOUT)
    if new["refresh_token"] == old_refresh:
        fail("refresh", "the refresh token was not rotated")
    seen["refreshed"] = sorted(new.keys())
    replay = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": old_refresh},
        auth=(client_id, client_secret),
        timeout=TIMEOUT,
    )
    seen["replay"] = [replay.status_code, replay.json().get("error")]
    seen["after_replay"] = client.introspect_token(
        meta["introspection_endpoint"], token=new["refresh_token"], timeout=TIMEOUT
    ).json()["active"]

    # Revocation of a fresh grant's access token: userinfo refuses it afterwards.
    client2 = OAuth2Session(
        client_id, client_secret, scope="openid email", redirect_uri=redirect_uri,
        code_challenge_method="S256", token_endpoint_auth_method="client_secret_post",
    )
    verifier2 = secrets.token_urlsafe(48)
    url2, _ = client2.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier2, nonce="n2"
    )
    r2 = requests.get(url2, cookies={cookie_name: cookie_value}, allow_redirects=False,
                      timeout=TIMEOUT)
    t2 = client2.fetch_token(meta["token_endpoint"], authorization_response=r2.headers["Location"],
                             code_verifier=verifier2, timeout=TIMEOUT)
    seen["post_auth_scope"] = t2.get("scope")
    rv = client2.revoke_token(meta["revocation_endpoint"], token=t2["access_token"],
                              token_type_hint="access_token", timeout=TIMEOUT)
    seen["revoke_status"] = rv.status_code
    seen["userinfo_after_revoke"] = client2.get(meta["userinfo_endpoint"], timeout=TIMEOUT).status_code
    seen["introspect_after_revoke"] = client2.introspect_token(
        meta["introspection_endpoint"], token=t2["access_token"], timeout=TIMEOUT
    ).json()

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
