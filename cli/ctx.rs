//! What every command needs: the database's core ([`authcore::Core`], opened on the
//! database and its key file), who is acting, and the output switches. Every change and
//! its audit row are the core's: authctl holds no SQL and reads no clock.

use anyhow::Result;
use authcore::admin::Actor;
use authcore::db::Location;
use authcore::kinds::AuditEvent;
use authcore::password::Hashing;
use authcore::Core;

use crate::args::Global;

pub struct Ctx {
    pub core: Core,
    pub actor: Actor,
    pub json: bool,
    pub yes: bool,
}

/// The OS user running the command: the actor of admin audit rows.
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| format!("uid:{uid}")),
    }
}

/// The operator at the server: the OS user, managing everyone.
pub fn operator() -> Actor {
    Actor::operator(&os_user())
}

/// The database and key file the flags name.
pub fn location(g: &Global) -> Location {
    Location::new(&g.db, g.key_file.clone())
}

impl Ctx {
    /// The core of the existing database (one hashing slot: a command hashes at most one
    /// password; `import` hashes on every core itself).
    pub fn open(g: &Global) -> Result<Ctx> {
        Ctx::open_with(g, Hashing::new(1))
    }

    /// The core with these hashing slots; read-only for a command that only reads
    /// ([`Global::read_only`]).
    pub fn open_with(g: &Global, hashing: Hashing) -> Result<Ctx> {
        let open = if g.read_only {
            Core::open_read_only
        } else {
            Core::open
        };
        let core = open(&location(g), hashing, Core::system_clock())?;
        // A command that only reads writes no audit row, so it has no use for the
        // operator's name; looking it up reads nsswitch.conf and the passwd database
        // (~15 system calls of every such command). It is named by uid instead.
        let actor = if g.read_only {
            Actor::operator(&format!("uid:{}", nix::unistd::getuid()))
        } else {
            operator()
        };
        Ok(Ctx {
            core,
            actor,
            json: g.json,
            yes: g.yes,
        })
    }
}

/// Record a refused admin action through the core (best effort, its own transaction: the
/// database may be the very thing that failed, and without it nothing is recorded).
pub fn record_failure(g: &Global, event: AuditEvent, target: &str, err: &anyhow::Error) {
    let Ok(core) = Core::open(&location(g), Hashing::new(1), Core::system_clock()) else {
        return;
    };
    let reason = err
        .downcast_ref::<authcore::Error>()
        .map(|e| e.code())
        .or_else(|| err.downcast_ref::<crate::output::Refused>().map(|r| r.code))
        .unwrap_or("error");
    let _ = core.audit_refusal(&operator(), event, target, reason, &err.to_string());
}
