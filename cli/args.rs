//! The command-line contract (API.md): every command, flag and help text.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Administer authd: users, organisations, groups, second factors, policy and the audit log.
///
/// authctl works directly on the daemon's SQLite file (default ./authd.db) and its key
/// file (DB.key). Start with `authctl init`, then `authctl user add NAME --email E`.
///
/// Exit codes: 0 success, 1 failure, 2 usage error or invalid input, 3 not found,
/// 4 already exists or conflict, 5 rejected by policy (e.g. a weak password).
#[derive(Debug, Parser)]
#[command(
    name = "authctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The database file.
    #[arg(
        long,
        global = true,
        env = "AUTHCTL_DB",
        default_value = "authd.db",
        value_name = "PATH"
    )]
    pub db: PathBuf,
    /// The secret-encryption key file [default: DB.key].
    #[arg(long, global = true, env = "AUTHCTL_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}.
    #[arg(long, global = true)]
    pub json: bool,
    /// Answer yes to confirmations (needed for destructive commands without a terminal).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Not a flag: the command only reads, so its core is opened read-only (set from the
    /// command by main's `reads_only`).
    #[arg(skip)]
    pub read_only: bool,
}

/// A command whose clap definition is built only when the command line names it
/// ([`clap::Command::defer`]). A run parses one of authctl's commands; building every
/// command's arguments and subcommands first was most of clap's share of each run's
/// start-up. Match through it: `Command::User(Lazy(c))`.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

/// Set by [`define_all_commands`]: [`Lazy`] then builds at once.
static ALL_AT_ONCE: AtomicBool = AtomicBool::new(false);

/// From now on, `Cli::command()` defines every command at once, as the derive alone
/// would: `authctl generate` walks them all, and its completions and man pages must not
/// depend on which command the run parsed.
pub fn define_all_commands() {
    ALL_AT_ONCE.store(true, Ordering::Relaxed);
}

/// `define` deferred to when clap enters `cmd`, or run now after [`define_all_commands`].
fn later(cmd: clap::Command, define: fn(clap::Command) -> clap::Command) -> clap::Command {
    if ALL_AT_ONCE.load(Ordering::Relaxed) {
        define(cmd)
    } else {
        cmd.defer(define)
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Lazy)
    }
    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<T: Subcommand> Subcommand for Lazy<T> {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        later(cmd, T::augment_subcommands)
    }
    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        later(cmd, T::augment_subcommands_for_update)
    }
    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        later(cmd, T::augment_args)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        later(cmd, T::augment_args_for_update)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database and its secret-encryption key file (refuses to overwrite).
    Init(Lazy<InitArgs>),
    /// Add, list, show, change, disable, enable and delete users.
    #[command(subcommand)]
    User(Lazy<UserCmd>),
    /// Set a user's password (asked twice on a terminal) or force a change at next login.
    Passwd(Lazy<PasswdArgs>),
    /// Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes.
    Enroll(Lazy<EnrollArgs>),
    /// Diagnose authenticator codes.
    #[command(subcommand)]
    Totp(Lazy<TotpCmd>),
    /// Remove every authenticator app, passkeys, recovery codes and remembered devices;
    /// the user enrols again.
    #[command(name = "reset-2fa")]
    Reset2fa(Lazy<NameArg>),
    /// Clear a user's lockout and failure count.
    Unlock(Lazy<NameArg>),
    /// List and revoke remembered devices.
    #[command(subcommand)]
    Device(Lazy<DeviceCmd>),
    /// List and remove a user's passkeys (WebAuthn credentials they registered).
    #[command(subcommand)]
    Passkey(Lazy<PasskeyCmd>),
    /// Query the audit log; `audit verify|prune|export` check, cut and ship it.
    Audit(Lazy<AuditArgs>),
    /// A consistent copy of the database into FILE while authd serves (never over an
    /// existing file). The key file is not in it: keep a copy of the key separately.
    Backup(Lazy<BackupArgs>),
    /// Move the database to another engine: `db copy --to postgres://…` copies this SQLite
    /// database (--db) into an empty PostgreSQL database, for running several nodes.
    #[command(subcommand)]
    Db(Lazy<DbCmd>),
    /// Check the database: integrity, schema version, that the key opens every secret,
    /// the audit chain. Exits 1 naming what is wrong.
    Verify,
    /// The key file's keys: list them, rotate to a new one, retire an old one.
    #[command(subcommand)]
    Key(Lazy<KeyCmd>),
    /// Organisations (tenants).
    #[command(subcommand)]
    Org(Lazy<OrgCmd>),
    /// Groups and whether they require two-factor authentication.
    #[command(subcommand)]
    Group(Lazy<GroupCmd>),
    /// Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…).
    #[command(subcommand)]
    Policy(Lazy<PolicyCmd>),
    /// List and revoke login sessions.
    #[command(subcommand)]
    Session(Lazy<SessionCmd>),
    /// Publish the terms and conditions users must accept.
    #[command(subcommand)]
    Terms(Lazy<TermsCmd>),
    /// The list of security questions users pick from (unknown names are shown
    /// questions of the same list, so the questions reveal nobody).
    #[command(subcommand)]
    Questions(Lazy<QuestionsCmd>),
    /// Create many users from a JSON-lines or CSV file.
    Import(Lazy<ImportArgs>),
    /// OpenID Connect clients (relying parties) and the provider's signing keys.
    #[command(subcommand)]
    Client(Lazy<ClientCmd>),
    /// Generate shell completions and man pages.
    #[command(subcommand)]
    Generate(Lazy<GenerateCmd>),
}

#[derive(Debug, Args)]
pub struct InitArgs {}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The username (case-insensitive).
    pub name: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    User,
    OrgAdmin,
    Admin,
}

impl RoleArg {
    pub fn role(self) -> authcore::store::users::Role {
        use authcore::store::users::Role;
        match self {
            RoleArg::User => Role::User,
            RoleArg::OrgAdmin => Role::OrgAdmin,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Args)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input (for scripts).
    #[arg(long, conflicts_with = "generate_password")]
    pub password_stdin: bool,
    /// Generate a strong random password and print it once.
    #[arg(long)]
    pub generate_password: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    ///
    /// Without --password-stdin or --generate-password, the password is asked twice on a
    /// terminal; without a terminal the user is created with no password (set one later
    /// with `authctl passwd`).
    Add(UserAddArgs),
    /// List users.
    List(UserListArgs),
    /// Show one user.
    Show(NameArg),
    /// Change a user's email, organisation, role or groups.
    Set(UserSetArgs),
    /// Disable a user: no login; sessions and remembered devices end.
    Disable(NameArg),
    /// Enable a disabled user.
    Enable(NameArg),
    /// Delete a user and everything attached (asks for confirmation; --yes to skip).
    Delete(NameArg),
    /// Print a one-time link (and its QR code) with which the user sets a new password.
    ///
    /// The link works once, for --ttl; its token is stored only as a hash. Hand it over
    /// in person or on paper; with --enrol it is a set-up link for a new account (the
    /// second factor is then set up at the first sign-in).
    #[command(name = "reset-link")]
    ResetLink(ResetLinkArgs),
}

#[derive(Debug, Args)]
pub struct ResetLinkArgs {
    /// The username (case-insensitive).
    pub name: String,
    /// A set-up link for a new account rather than a password reset: it too sets the
    /// password only; the second factor is set up at the first sign-in (when the
    /// account needs one), an existing one is kept.
    #[arg(long)]
    pub enrol: bool,
    /// How long the link works: 30m, 24h, 7d… (1 minute to 30 days).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub ttl: String,
    /// The portal's public URL the link starts with (authd's --public-url).
    #[arg(
        long,
        env = "AUTHCTL_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
    /// Do not print the QR code.
    #[arg(long)]
    pub no_qr: bool,
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The username: letters, digits and . _ - @ + (case-insensitive, unique).
    pub name: String,
    /// The user's email address (for emailed codes and notices).
    #[arg(long)]
    pub email: String,
    /// The organisation [default: "default", created on first use].
    #[arg(long)]
    pub org: Option<String>,
    /// A group to join (repeatable). Groups must exist (`authctl group add`).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// The role.
    #[arg(long, value_enum, default_value = "user")]
    pub role: RoleArg,
    #[command(flatten)]
    pub password: PasswordSource,
    /// Force a password change at the first login.
    #[arg(long)]
    pub must_change_password: bool,
}

#[derive(Debug, Args)]
pub struct UserListArgs {
    /// Only users of this organisation.
    #[arg(long)]
    pub org: Option<String>,
    /// Only locked users.
    #[arg(long)]
    pub locked: bool,
    /// Only members of this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct UserSetArgs {
    pub name: String,
    /// New email address.
    #[arg(long)]
    pub email: Option<String>,
    /// Move to another organisation.
    #[arg(long)]
    pub org: Option<String>,
    /// New role.
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// Join a group (repeatable).
    #[arg(long = "add-group", value_name = "GROUP")]
    pub add_groups: Vec<String>,
    /// Leave a group (repeatable).
    #[arg(long = "remove-group", value_name = "GROUP")]
    pub remove_groups: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    pub name: String,
    #[command(flatten)]
    pub password: PasswordSource,
    /// Force a password change at the next login (alone: without setting a new password).
    #[arg(long)]
    pub expire: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    Totp,
    Email,
}

impl From<MethodArg> for authcore::kinds::MfaMethod {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Totp => authcore::kinds::MfaMethod::Totp,
            MethodArg::Email => authcore::kinds::MfaMethod::Email,
        }
    }
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The user to enrol now (or --group with --letters).
    #[arg(required_unless_present = "group")]
    pub name: Option<String>,
    /// Every member of GROUP instead: write an enrolment letter per member (with
    /// --letters), each with the QR code of a one-time set-up link, and an index.
    #[arg(
        long,
        value_name = "GROUP",
        conflicts_with = "name",
        requires = "letters"
    )]
    pub group: Option<String>,
    /// The folder for the letters (created; existing letters are not overwritten).
    #[arg(long, value_name = "DIR", requires = "group")]
    pub letters: Option<PathBuf>,
    /// With --letters: how long each link works (1 minute to 30 days).
    #[arg(
        long,
        default_value = "7d",
        value_name = "DURATION",
        requires = "group"
    )]
    pub ttl: String,
    /// With --letters: the portal's public URL the links start with (authd's --public-url).
    #[arg(
        long,
        env = "AUTHCTL_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
    /// The second factor: an authenticator app (TOTP) or codes sent by email.
    #[arg(long, value_enum, default_value = "totp")]
    pub method: MethodArg,
    /// Also write the QR code as a PNG image to FILE.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Do not print the QR code in the terminal.
    #[arg(long)]
    pub no_qr: bool,
}

#[derive(Debug, Subcommand)]
pub enum TotpCmd {
    /// Check whether CODE matches one of the user's authenticator apps now: which app,
    /// and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a
    /// match, 1 otherwise.
    Test(TotpTestArgs),
}

#[derive(Debug, Args)]
pub struct TotpTestArgs {
    pub name: String,
    /// The 6-digit code shown by the app.
    pub code: String,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// List live remembered devices.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one device by id, or all of a user's devices.
    Revoke {
        /// The device id (from `device list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<i64>,
        /// Revoke every device of this user.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PasskeyCmd {
    /// List a user's passkeys: id, name, authenticator model (AAGUID), created, last
    /// used, signature counter, backed up, user verified.
    List {
        /// The username (case-insensitive).
        name: String,
    },
    /// Remove one passkey of a user (a lost or stolen authenticator); the other
    /// factors stay. `reset-2fa` removes them all.
    Remove {
        /// The username (case-insensitive).
        name: String,
        /// The passkey id (from `passkey list NAME`).
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// List live sessions.
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
    },
    /// End one session by id, or every session of a user.
    Revoke {
        /// The session id (from `session list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<i64>,
        /// End every session of this user.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TermsCmd {
    /// Publish a new version; users accept it at their next login (see the terms.mode policy).
    #[command(disable_version_flag = true)]
    Set {
        /// The version name, e.g. 2026-11 (unique; a published version never changes).
        #[arg(long)]
        version: String,
        /// A UTF-8 text file with the terms, at most 256 KiB ('-' for standard input).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Show the current version.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum QuestionsCmd {
    /// Replace the list: one question per line (5 to 100; blank lines skipped). From now
    /// on users pick their questions from it.
    Set {
        /// A UTF-8 text file, one question per line ('-' for standard input).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Show the list in force (the admin's, or the built-in default).
    Show,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutcomeArg {
    Success,
    Failure,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new file (refused if it exists).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Copy everything (users, hashes, encrypted secrets, factors, devices, sessions,
    /// policy, terms, questions, OpenID Connect, the audit log and its chain) with every
    /// id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent
    /// snapshot (authd may keep serving from the SQLite file meanwhile). A target with no
    /// schema gets it; one holding any row is refused (exit 4) and left unchanged. Row
    /// counts are compared table by table and printed. The key file stays the same file:
    /// start authd on the copy with `--db URL --key-file` the source's key file.
    ///
    /// Example: authctl --db /var/lib/authd/authd.db db copy --to postgres://authd@db1/authd
    #[command(verbatim_doc_comment)]
    Copy(DbCopyArgs),
}

#[derive(Debug, Args)]
pub struct DbCopyArgs {
    /// The target: postgres://user[:password]@host[:port]/dbname (an empty database).
    #[arg(long, value_name = "URL")]
    pub to: String,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// The keys of the key file (which one is current) and what still needs each.
    List,
    /// Add a new key to the key file and make it current, then encrypt the TOTP secrets
    /// and seal the audit log again under it, in short batches while authd serves (a
    /// running authd reads the changed key file within a second). Recovery and emailed
    /// codes issued before stay valid under their old key until used.
    Rotate,
    /// Finish or repeat a rotation's re-encryption (after an interruption, or rows a
    /// running authd sealed under the old key before it noticed the new one).
    Rekey,
    /// Remove key ID from the key file. Refused for the current key, and while anything
    /// stored still needs it (each kind of value named with a count).
    Retire {
        /// The key's number (`authctl key list`).
        #[arg(value_name = "ID")]
        id: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check every row's MAC under the key: exits 1 naming the first row that was edited,
    /// deleted, inserted or moved.
    Verify,
    /// Delete the rows written before T (RFC 3339, a date, or a duration back: 400d),
    /// keeping the chain verifiable from a signed anchor at the cut.
    Prune {
        #[arg(long, value_name = "T")]
        before: String,
    },
    /// Print rows as JSON lines with their MACs, oldest first, for log shipping.
    Export {
        /// From this time (same forms as `audit --since`).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only rows after this id (what the last export ended with).
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after_id: i64,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub cmd: Option<AuditCmd>,
    /// Rows about this user (by account, or the username as typed).
    #[arg(long)]
    pub user: Option<String>,
    /// Rows of this organisation.
    #[arg(long)]
    pub org: Option<String>,
    /// An event (login.password) or a prefix ending in '.' or '*' (login.).
    #[arg(long)]
    pub event: Option<String>,
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Rows from this client IP address.
    #[arg(long)]
    pub ip: Option<String>,
    /// From this time: RFC 3339, a date (2026-11-23) or a duration back from now (1h, 7d).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Up to this time (same forms as --since).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// At most N rows, the newest (0: no limit); when more match, a note on stderr says so.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Output format (--json implies json: one JSON object per line).
    #[arg(long, value_enum, default_value = "table")]
    pub format: AuditFormat,
    /// Keep running and print new rows as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Create an organisation.
    Add {
        name: String,
        /// The second factor its users get by default.
        #[arg(long, value_enum)]
        mfa_method: Option<MethodArg>,
    },
    /// List organisations.
    List,
    /// Delete an empty organisation.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a group.
    Add {
        name: String,
        /// Members must use a second factor before they get a session.
        #[arg(long)]
        require_2fa: bool,
        /// Members must use a passkey as their second factor (TOTP and emailed codes
        /// refused) when the policy says so: `policy set mfa.passkey_required=groups`.
        #[arg(long)]
        require_passkey: bool,
    },
    /// Change whether a group requires a second factor (and a passkey).
    Set {
        name: String,
        #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
        require_2fa: bool,
        /// Whether members must use a passkey (with mfa.passkey_required=groups).
        #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
        require_passkey: Option<bool>,
    },
    /// List groups.
    List,
    /// Delete a group (members leave it). When the group requires a second factor and has
    /// members, asks for confirmation (--yes to skip).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Register an OpenID Connect client. Prints its client_id and, for a confidential
    /// client, its secret: shown once, stored hashed (`--json` gives
    /// {"client_id","client_secret"}).
    Add {
        /// A name for people (the consent page shows it).
        name: String,
        /// Where authd may send the browser back with a code (repeatable). Matched
        /// exactly, byte for byte: register every URI the application uses.
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uri: Vec<String>,
        /// No secret (a single-page or native app): the client must use PKCE (S256).
        #[arg(long)]
        public: bool,
        /// Skip the consent page (an application of this site).
        #[arg(long)]
        trusted: bool,
        /// Only members of this group may sign in to the client (repeatable: any of them).
        #[arg(long = "group", value_name = "G")]
        group: Vec<String>,
        /// How its ID tokens are signed: RS256 (what every client reads), EdDSA (Ed25519)
        /// or ES256 (ECDSA on P-256). Access tokens stay RS256 (only authd reads them).
        #[arg(long, value_name = "ALG", default_value = "RS256", value_parser = ["RS256", "EdDSA", "ES256"])]
        id_token_alg: String,
    },
    /// List clients.
    List,
    /// Show one client (by name or client_id).
    Show { name: String },
    /// Remove a client and every code, token and consent issued to it.
    Remove { name: String },
    /// Give a confidential client a new secret (printed once); the old one stops working.
    #[command(name = "rotate-secret")]
    RotateSecret { name: String },
    /// Make new signing keys; the old ones stay in the JWKS until their tokens expire.
    #[command(name = "rotate-keys")]
    RotateKeys,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Show every setting, its value and default.
    Show,
    /// Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Apply a named set of settings: `seed` (the rules authd was first built to: character
    /// classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no
    /// composition rules or expiry, common passwords refused, smart lockout). Asks first
    /// (--yes for scripts); --show prints what would change and changes nothing.
    Preset {
        #[arg(value_parser = ["seed", "nist-800-63b"])]
        name: String,
        /// Print each setting, its current and its preset value and why; change nothing.
        #[arg(long)]
        show: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ImportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: JSON lines ({"username","email","org","groups","role","password",
    /// "must_change_password"}) or CSV with a header (username,email,org,groups,role,password;
    /// groups separated by ';').
    pub file: PathBuf,
    /// The file format [default: from the extension, .csv or else jsonl].
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Check every line and report, but create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCmd {
    /// Shell completions (to standard output, or a file in --out-dir).
    Completions {
        #[arg(value_enum)]
        shell: ShellArg,
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Man pages for authctl and each subcommand.
    Man {
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_command_is_defined_only_when_the_command_line_names_it() {
        let cli = Cli::command();
        let user = cli.find_subcommand("user").expect("user is listed at once");
        assert!(
            user.get_about().is_some(),
            "its one-line help is there for `authctl --help`"
        );
        assert_eq!(
            user.get_subcommands().count(),
            0,
            "user's subcommands were built before the command line named it"
        );
        let audit = cli
            .find_subcommand("audit")
            .expect("audit is listed at once");
        assert!(
            audit.get_arguments().all(|a| a.get_id() != "since"),
            "audit's flags were built before the command line named it"
        );

        // Named, it is built and parsed as the derive alone would.
        let parsed = Cli::try_parse_from(["authctl", "audit", "--user", "u", "--since", "1d"])
            .expect("audit parses");
        match parsed.command {
            Command::Audit(Lazy(a)) => {
                assert_eq!(a.user.as_deref(), Some("u"));
                assert_eq!(a.since.as_deref(), Some("1d"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let err = Cli::try_parse_from(["authctl", "user", "add"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
