//! `client …`: OpenID Connect clients and the provider's signing keys (the decisions and
//! audit rows are the core's, `authcore::oidc`).

use anyhow::Result;
use authcore::kinds::AuditEvent;
use serde_json::json;

use crate::args::{ClientCmd, Global};
use crate::ctx::Ctx;
use crate::output::{self, emit};

/// The audit event and target of a state-changing `client` command.
pub fn audit_label(c: &ClientCmd) -> Option<(AuditEvent, String)> {
    Some(match c {
        ClientCmd::Add { name, .. } => (AuditEvent::AdminClientAdd, name.clone()),
        ClientCmd::Remove { name } => (AuditEvent::AdminClientRemove, name.clone()),
        ClientCmd::RotateSecret { name } => (AuditEvent::AdminClientRotateSecret, name.clone()),
        ClientCmd::RotateKeys => (AuditEvent::AdminOidcRotateKeys, String::new()),
        ClientCmd::List | ClientCmd::Show { .. } => return None,
    })
}

fn secret_note(id: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) => format!(
            "client_id:     {id}\nclient_secret: {s}\n(the secret is shown this once; authd keeps only its hash)"
        ),
        None => format!("client_id: {id}\n(a public client: no secret, PKCE required)"),
    }
}

pub fn run(g: &Global, c: ClientCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        ClientCmd::Add {
            name,
            redirect_uri,
            public,
            trusted,
            group,
            id_token_alg,
        } => {
            let n = ctx.core.oidc_client_add(
                &ctx.actor,
                &name,
                &redirect_uri,
                public,
                trusted,
                &group,
                &id_token_alg,
            )?;
            emit(ctx.json, &n, || {
                secret_note(&n.client_id, n.client_secret.as_deref())
            });
        }
        ClientCmd::List => {
            let list = ctx.core.oidc_clients()?;
            emit(ctx.json, &list, || {
                let mut tb =
                    output::table(&["client", "client_id", "type", "redirect URIs", "groups"]);
                for c in &list {
                    tb.add_row(vec![
                        c.name.clone(),
                        c.client_id.clone(),
                        match (c.public, c.trusted) {
                            (true, true) => "public, trusted",
                            (true, false) => "public",
                            (false, true) => "confidential, trusted",
                            (false, false) => "confidential",
                        }
                        .to_string(),
                        c.redirect_uris.join("\n"),
                        c.groups.join(", "),
                    ]);
                }
                tb.to_string()
            });
        }
        ClientCmd::Show { name } => {
            let c = ctx.core.oidc_client(&name)?;
            emit(ctx.json, &c, || {
                format!(
                    "client:        {}\nclient_id:     {}\npublic:        {}\ntrusted:       {}\nID tokens:     {}\nredirect URIs: {}\ngroups:        {}\ncreated:       {}",
                    c.name,
                    c.client_id,
                    c.public,
                    c.trusted,
                    c.id_token_alg,
                    c.redirect_uris.join(" "),
                    if c.groups.is_empty() { "(everyone)".into() } else { c.groups.join(", ") },
                    output::time(Some(c.created_at)),
                )
            });
        }
        ClientCmd::Remove { name } => {
            let c = ctx.core.oidc_client_remove(&ctx.actor, &name)?;
            emit(
                ctx.json,
                &json!({"removed": c.name, "client_id": c.client_id}),
                || format!("removed client {} ({})", c.name, c.client_id),
            );
        }
        ClientCmd::RotateSecret { name } => {
            let n = ctx.core.oidc_client_rotate_secret(&ctx.actor, &name)?;
            emit(ctx.json, &n, || {
                secret_note(&n.client_id, n.client_secret.as_deref())
            });
        }
        ClientCmd::RotateKeys => {
            let retired = ctx.core.oidc_rotate_keys(&ctx.actor)?;
            emit(ctx.json, &json!({"retired": retired}), || {
                format!("new signing keys; {retired} old key(s) stay published until their tokens expire")
            });
        }
    }
    Ok(0)
}
