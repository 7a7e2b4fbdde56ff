//! `key list|rotate|rekey|retire`: the key file's keys. The decisions are the core's
//! ([`authcore::rotation`]).

use anyhow::Result;
use authcore::rotation::{describe_uses, KeyInfo, Rekeyed};

use crate::args::{Global, KeyCmd};
use crate::ctx::Ctx;
use crate::output::{emit, table};

fn keys_table(keys: &[KeyInfo]) -> String {
    let mut t = table(&["key", "current", "still needed by"]);
    for k in keys {
        t.add_row(vec![
            k.id.to_string(),
            if k.current { "yes" } else { "" }.to_string(),
            describe_uses(&k.uses),
        ]);
    }
    t.to_string()
}

fn rekeyed_text(r: &Rekeyed) -> String {
    let mut s = format!(
        "current key: {} ({})\nencrypted again: {} secrets; audit rows sealed again: {}",
        r.key, r.key_file, r.reencrypted, r.audit_resealed
    );
    for k in &r.older {
        if k.uses.is_empty() {
            s.push_str(&format!(
                "\nkey {}: nothing needs it any more (authctl key retire {})",
                k.id, k.id
            ));
        } else {
            s.push_str(&format!(
                "\nkey {}: still needed by {}",
                k.id,
                describe_uses(&k.uses)
            ));
        }
    }
    s
}

pub fn run(g: &Global, c: KeyCmd) -> Result<i32> {
    let ctx = Ctx::open(g)?;
    match c {
        KeyCmd::List => {
            let keys = ctx.core.key_list(&ctx.actor)?;
            emit(ctx.json, &keys, || keys_table(&keys));
        }
        KeyCmd::Rotate => {
            let r = ctx.core.key_rotate(&ctx.actor)?;
            emit(ctx.json, &r, || {
                format!(
                    "added key {} and made it current\n{}",
                    r.key,
                    rekeyed_text(&r)
                )
            });
        }
        KeyCmd::Rekey => {
            let r = ctx.core.key_rekey(&ctx.actor)?;
            emit(ctx.json, &r, || rekeyed_text(&r));
        }
        KeyCmd::Retire { id } => {
            let r = ctx.core.key_retire(&ctx.actor, id)?;
            emit(ctx.json, &r, || {
                format!(
                    "retired key {} from {}; keys left: {:?}",
                    r.retired, r.key_file, r.keys
                )
            });
        }
    }
    Ok(0)
}
