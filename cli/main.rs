//! authctl: the admin CLI of authd. Works directly on the SQLite file.
// Unsafe code only where authctl starts (start.rs and the C entry point below).
#![deny(unsafe_code)]
#![cfg_attr(not(test), no_main)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod admin;
mod args;
mod audit_cmd;
mod client;
mod ctx;
mod factors;
mod generate;
mod import;
mod keys;
mod maint;
mod output;
mod prompt;
#[allow(unsafe_code)]
mod start;
mod users;

use authcore::kinds::AuditEvent;
use clap::Parser;

use args::{Cli, Command, Lazy};

/// The entry point: C's `main`, called by the C runtime with std's own set-up skipped
/// (see [`start`] for why and for what is done in its place).
#[cfg(not(test))]
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    start::prepare();
    // A panic may not unwind into C: it ends the process as std's start-up did, with 101
    // (the message is on stderr already, from the panic hook).
    match std::panic::catch_unwind(authctl) {
        Ok(never) => match never {},
        Err(_) => std::process::exit(101),
    }
}

/// The program: parse the command line, run the command, exit with its code.
#[cfg_attr(test, allow(dead_code))]
fn authctl() -> std::convert::Infallible {
    // The database, its key file and SQLite's side files hold secrets.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut cli = Cli::parse();
    cli.global.read_only = reads_only(&cli.command);
    let global = cli.global.clone();
    let label = audit_label(&cli.command);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A refused admin action is a decision too: audit it (best effort).
            if let Some((event, target)) = &label {
                if e.downcast_ref::<output::Audited>().is_none() {
                    ctx::record_failure(&global, *event, target, &e);
                }
            }
            output::report_error(&e, global.json)
        }
    };
    std::process::exit(code);
}

/// Whether the command only reads: its core is then opened read-only
/// ([`authcore::Core::open_read_only`]: no writer or checkpoint thread, every write
/// refused). A command that writes anything, an audit row included, is not one.
fn reads_only(c: &Command) -> bool {
    use args::{
        AuditCmd, ClientCmd, DeviceCmd, GroupCmd, KeyCmd, OrgCmd, PolicyCmd, QuestionsCmd,
        SessionCmd, TermsCmd, UserCmd,
    };
    match c {
        Command::User(Lazy(c)) => matches!(c, UserCmd::List(_) | UserCmd::Show(_)),
        Command::Device(Lazy(c)) => matches!(c, DeviceCmd::List { .. }),
        Command::Session(Lazy(c)) => matches!(c, SessionCmd::List { .. }),
        Command::Audit(Lazy(a)) => !matches!(a.cmd, Some(AuditCmd::Prune { .. })),
        Command::Verify => true,
        Command::Key(Lazy(c)) => matches!(c, KeyCmd::List),
        Command::Org(Lazy(c)) => matches!(c, OrgCmd::List),
        Command::Group(Lazy(c)) => matches!(c, GroupCmd::List),
        Command::Policy(Lazy(c)) => {
            matches!(c, PolicyCmd::Show | PolicyCmd::Preset { show: true, .. })
        }
        Command::Terms(Lazy(c)) => matches!(c, TermsCmd::Show),
        Command::Questions(Lazy(c)) => matches!(c, QuestionsCmd::Show),
        Command::Client(Lazy(c)) => matches!(c, ClientCmd::List | ClientCmd::Show { .. }),
        // Listing passkeys is audited (admin.passkey.list), and so is `totp test`.
        Command::Passkey(Lazy(_)) | Command::Totp(Lazy(_)) => false,
        Command::Init(Lazy(_))
        | Command::Passwd(Lazy(_))
        | Command::Enroll(Lazy(_))
        | Command::Reset2fa(Lazy(_))
        | Command::Unlock(Lazy(_))
        | Command::Backup(Lazy(_))
        | Command::Db(Lazy(_))
        | Command::Import(Lazy(_))
        | Command::Generate(Lazy(_)) => false,
    }
}

/// The audit event and target of a state-changing command (None for read-only ones).
fn audit_label(c: &Command) -> Option<(AuditEvent, String)> {
    use args::{DeviceCmd, GroupCmd, OrgCmd, PasskeyCmd, PolicyCmd, SessionCmd, TermsCmd, UserCmd};
    Some(match c {
        Command::User(Lazy(UserCmd::Add(a))) => (AuditEvent::AdminUserAdd, a.name.clone()),
        Command::User(Lazy(UserCmd::Set(a))) => (AuditEvent::AdminUserSet, a.name.clone()),
        Command::User(Lazy(UserCmd::Disable(a))) => (AuditEvent::AdminUserDisable, a.name.clone()),
        Command::User(Lazy(UserCmd::Enable(a))) => (AuditEvent::AdminUserEnable, a.name.clone()),
        Command::User(Lazy(UserCmd::Delete(a))) => (AuditEvent::AdminUserDelete, a.name.clone()),
        Command::User(Lazy(UserCmd::ResetLink(a))) => (AuditEvent::AdminResetLink, a.name.clone()),
        Command::Passwd(Lazy(a)) => (AuditEvent::AdminPasswd, a.name.clone()),
        Command::Enroll(Lazy(a)) => match (&a.name, &a.group) {
            (Some(n), _) => (AuditEvent::AdminEnroll, n.clone()),
            (None, g) => (AuditEvent::AdminResetLink, g.clone().unwrap_or_default()),
        },
        Command::Reset2fa(Lazy(a)) => (AuditEvent::AdminReset2fa, a.name.clone()),
        Command::Unlock(Lazy(a)) => (AuditEvent::AdminUnlock, a.name.clone()),
        Command::Device(Lazy(DeviceCmd::Revoke { user, .. })) => (
            AuditEvent::AdminDeviceRevoke,
            user.clone().unwrap_or_default(),
        ),
        Command::Passkey(Lazy(PasskeyCmd::Remove { name, .. })) => {
            (AuditEvent::AdminPasskeyRemove, name.clone())
        }
        Command::Org(Lazy(OrgCmd::Add { name, .. })) => (AuditEvent::AdminOrgAdd, name.clone()),
        Command::Org(Lazy(OrgCmd::Delete { name })) => (AuditEvent::AdminOrgDelete, name.clone()),
        Command::Group(Lazy(GroupCmd::Add { name, .. })) => {
            (AuditEvent::AdminGroupAdd, name.clone())
        }
        Command::Group(Lazy(GroupCmd::Set { name, .. })) => {
            (AuditEvent::AdminGroupSet, name.clone())
        }
        Command::Group(Lazy(GroupCmd::Delete { name })) => {
            (AuditEvent::AdminGroupDelete, name.clone())
        }
        Command::Policy(Lazy(PolicyCmd::Set { .. })) => (AuditEvent::AdminPolicySet, String::new()),
        Command::Policy(Lazy(PolicyCmd::Preset { show: false, name })) => {
            (AuditEvent::AdminPolicySet, format!("preset {name}"))
        }
        Command::Import(Lazy(_)) => (AuditEvent::AdminImport, String::new()),
        Command::Client(Lazy(c)) => return client::audit_label(c),
        Command::Session(Lazy(SessionCmd::Revoke { user, .. })) => (
            AuditEvent::AdminSessionRevoke,
            user.clone().unwrap_or_default(),
        ),
        Command::Terms(Lazy(TermsCmd::Set { .. })) => (AuditEvent::AdminTermsSet, String::new()),
        Command::Questions(Lazy(args::QuestionsCmd::Set { .. })) => {
            (AuditEvent::AdminQuestionsSet, String::new())
        }
        Command::Backup(Lazy(a)) => (AuditEvent::AdminBackup, a.file.display().to_string()),
        Command::Db(Lazy(args::DbCmd::Copy(a))) => {
            (AuditEvent::AdminDbCopy, authcore::sql::redact_url(&a.to))
        }
        Command::Key(Lazy(args::KeyCmd::Rotate)) => (AuditEvent::AdminKeyRotate, String::new()),
        Command::Audit(Lazy(args::AuditArgs {
            cmd: Some(args::AuditCmd::Prune { .. }),
            ..
        })) => (AuditEvent::AdminAuditPrune, String::new()),
        _ => return None,
    })
}

/// Run one command; Ok carries the exit code (0, or 1 for a "no" answer like a TOTP
/// code that does not match).
fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = cli.global;
    match cli.command {
        Command::Init(Lazy(a)) => admin::init(&g, a),
        Command::User(Lazy(c)) => users::run(&g, c),
        Command::Passwd(Lazy(a)) => users::passwd(&g, a),
        Command::Enroll(Lazy(a)) => factors::enroll(&g, a),
        Command::Totp(Lazy(c)) => factors::totp(&g, c),
        Command::Reset2fa(Lazy(a)) => factors::reset_2fa(&g, a),
        Command::Unlock(Lazy(a)) => factors::unlock(&g, a),
        Command::Device(Lazy(c)) => factors::device(&g, c),
        Command::Passkey(Lazy(c)) => factors::passkey(&g, c),
        Command::Audit(Lazy(a)) => match a.cmd {
            Some(c) => maint::audit(&g, c),
            None => audit_cmd::run(&g, a),
        },
        Command::Backup(Lazy(a)) => maint::backup(&g, a),
        Command::Db(Lazy(args::DbCmd::Copy(a))) => maint::db_copy(&g, a),
        Command::Verify => maint::verify(&g),
        Command::Key(Lazy(c)) => keys::run(&g, c),
        Command::Org(Lazy(c)) => admin::org(&g, c),
        Command::Group(Lazy(c)) => admin::group(&g, c),
        Command::Policy(Lazy(c)) => admin::policy(&g, c),
        Command::Session(Lazy(c)) => admin::session(&g, c),
        Command::Terms(Lazy(c)) => admin::terms(&g, c),
        Command::Questions(Lazy(c)) => admin::questions(&g, c),
        Command::Import(Lazy(a)) => import::run(&g, a),
        Command::Client(Lazy(c)) => client::run(&g, c),
        Command::Generate(Lazy(c)) => generate::run(c),
    }
}
