
use builtin;
use str;

set edit:completion:arg-completer[authctl] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'authctl'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'authctl'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand init 'Create the database and its secret-encryption key file (refuses to overwrite)'
            cand user 'Add, list, show, change, disable, enable and delete users'
            cand passwd 'Set a user''s password (asked twice on a terminal) or force a change at next login'
            cand enroll 'Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes'
            cand totp 'Diagnose authenticator codes'
            cand reset-2fa 'Remove every authenticator app, passkeys, recovery codes and remembered devices; the user enrols again'
            cand unlock 'Clear a user''s lockout and failure count'
            cand device 'List and revoke remembered devices'
            cand passkey 'List and remove a user''s passkeys (WebAuthn credentials they registered)'
            cand audit 'Query the audit log; `audit verify|prune|export` check, cut and ship it'
            cand backup 'A consistent copy of the database into FILE while authd serves (never over an existing file). The key file is not in it: keep a copy of the key separately'
            cand db 'Move the database to another engine: `db copy --to postgres://…` copies this SQLite database (--db) into an empty PostgreSQL database, for running several nodes'
            cand verify 'Check the database: integrity, schema version, that the key opens every secret, the audit chain. Exits 1 naming what is wrong'
            cand key 'The key file''s keys: list them, rotate to a new one, retire an old one'
            cand org 'Organisations (tenants)'
            cand group 'Groups and whether they require two-factor authentication'
            cand policy 'Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…)'
            cand session 'List and revoke login sessions'
            cand terms 'Publish the terms and conditions users must accept'
            cand questions 'The list of security questions users pick from (unknown names are shown questions of the same list, so the questions reveal nobody)'
            cand import 'Create many users from a JSON-lines or CSV file'
            cand client 'OpenID Connect clients (relying parties) and the provider''s signing keys'
            cand generate 'Generate shell completions and man pages'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;init'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Create a user'
            cand list 'List users'
            cand show 'Show one user'
            cand set 'Change a user''s email, organisation, role or groups'
            cand disable 'Disable a user: no login; sessions and remembered devices end'
            cand enable 'Enable a disabled user'
            cand delete 'Delete a user and everything attached (asks for confirmation; --yes to skip)'
            cand reset-link 'Print a one-time link (and its QR code) with which the user sets a new password'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;user;add'= {
            cand --email 'The user''s email address (for emailed codes and notices)'
            cand --org 'The organisation [default: "default", created on first use]'
            cand --group 'A group to join (repeatable). Groups must exist (`authctl group add`)'
            cand --role 'The role'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --password-stdin 'Read the password from the first line of standard input (for scripts)'
            cand --generate-password 'Generate a strong random password and print it once'
            cand --must-change-password 'Force a password change at the first login'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;list'= {
            cand --org 'Only users of this organisation'
            cand --group 'Only members of this group'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --locked 'Only locked users'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;show'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;set'= {
            cand --email 'New email address'
            cand --org 'Move to another organisation'
            cand --role 'New role'
            cand --add-group 'Join a group (repeatable)'
            cand --remove-group 'Leave a group (repeatable)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;disable'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;enable'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;delete'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;reset-link'= {
            cand --ttl 'How long the link works: 30m, 24h, 7d… (1 minute to 30 days)'
            cand --url 'The portal''s public URL the link starts with (authd''s --public-url)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --enrol 'A set-up link for a new account rather than a password reset: it too sets the password only; the second factor is set up at the first sign-in (when the account needs one), an existing one is kept'
            cand --no-qr 'Do not print the QR code'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;user;help'= {
            cand add 'Create a user'
            cand list 'List users'
            cand show 'Show one user'
            cand set 'Change a user''s email, organisation, role or groups'
            cand disable 'Disable a user: no login; sessions and remembered devices end'
            cand enable 'Enable a disabled user'
            cand delete 'Delete a user and everything attached (asks for confirmation; --yes to skip)'
            cand reset-link 'Print a one-time link (and its QR code) with which the user sets a new password'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;user;help;add'= {
        }
        &'authctl;user;help;list'= {
        }
        &'authctl;user;help;show'= {
        }
        &'authctl;user;help;set'= {
        }
        &'authctl;user;help;disable'= {
        }
        &'authctl;user;help;enable'= {
        }
        &'authctl;user;help;delete'= {
        }
        &'authctl;user;help;reset-link'= {
        }
        &'authctl;user;help;help'= {
        }
        &'authctl;passwd'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --password-stdin 'Read the password from the first line of standard input (for scripts)'
            cand --generate-password 'Generate a strong random password and print it once'
            cand --expire 'Force a password change at the next login (alone: without setting a new password)'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;enroll'= {
            cand --group 'Every member of GROUP instead: write an enrolment letter per member (with --letters), each with the QR code of a one-time set-up link, and an index'
            cand --letters 'The folder for the letters (created; existing letters are not overwritten)'
            cand --ttl 'With --letters: how long each link works (1 minute to 30 days)'
            cand --url 'With --letters: the portal''s public URL the links start with (authd''s --public-url)'
            cand --method 'The second factor: an authenticator app (TOTP) or codes sent by email'
            cand --png 'Also write the QR code as a PNG image to FILE'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --no-qr 'Do not print the QR code in the terminal'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;totp'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand test 'Check whether CODE matches one of the user''s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;totp;test'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;totp;help'= {
            cand test 'Check whether CODE matches one of the user''s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;totp;help;test'= {
        }
        &'authctl;totp;help;help'= {
        }
        &'authctl;reset-2fa'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;unlock'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;device'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List live remembered devices'
            cand revoke 'Revoke one device by id, or all of a user''s devices'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;device;list'= {
            cand --user 'Only this user''s devices'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;device;revoke'= {
            cand --user 'Revoke every device of this user'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;device;help'= {
            cand list 'List live remembered devices'
            cand revoke 'Revoke one device by id, or all of a user''s devices'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;device;help;list'= {
        }
        &'authctl;device;help;revoke'= {
        }
        &'authctl;device;help;help'= {
        }
        &'authctl;passkey'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List a user''s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified'
            cand remove 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;passkey;list'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;passkey;remove'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;passkey;help'= {
            cand list 'List a user''s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified'
            cand remove 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;passkey;help;list'= {
        }
        &'authctl;passkey;help;remove'= {
        }
        &'authctl;passkey;help;help'= {
        }
        &'authctl;audit'= {
            cand --user 'Rows about this user (by account, or the username as typed)'
            cand --org 'Rows of this organisation'
            cand --event 'An event (login.password) or a prefix ending in ''.'' or ''*'' (login.)'
            cand --outcome 'outcome'
            cand --ip 'Rows from this client IP address'
            cand --since 'From this time: RFC 3339, a date (2026-11-23) or a duration back from now (1h, 7d)'
            cand --until 'Up to this time (same forms as --since)'
            cand --limit 'At most N rows, the newest (0: no limit); when more match, a note on stderr says so'
            cand --format 'Output format (--json implies json: one JSON object per line)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand -f 'Keep running and print new rows as they are written'
            cand --follow 'Keep running and print new rows as they are written'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand verify 'Check every row''s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved'
            cand prune 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut'
            cand export 'Print rows as JSON lines with their MACs, oldest first, for log shipping'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;audit;verify'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;audit;prune'= {
            cand --before 'before'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;audit;export'= {
            cand --since 'From this time (same forms as `audit --since`)'
            cand --after-id 'Only rows after this id (what the last export ended with)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;audit;help'= {
            cand verify 'Check every row''s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved'
            cand prune 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut'
            cand export 'Print rows as JSON lines with their MACs, oldest first, for log shipping'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;audit;help;verify'= {
        }
        &'authctl;audit;help;prune'= {
        }
        &'authctl;audit;help;export'= {
        }
        &'authctl;audit;help;help'= {
        }
        &'authctl;backup'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;db'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand copy 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source''s key file.'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;db;copy'= {
            cand --to 'The target: postgres://user[:password]@host[:port]/dbname (an empty database)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;db;help'= {
            cand copy 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source''s key file.'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;db;help;copy'= {
        }
        &'authctl;db;help;help'= {
        }
        &'authctl;verify'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;key'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'The keys of the key file (which one is current) and what still needs each'
            cand rotate 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used'
            cand rekey 'Finish or repeat a rotation''s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)'
            cand retire 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;key;list'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;key;rotate'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;key;rekey'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;key;retire'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;key;help'= {
            cand list 'The keys of the key file (which one is current) and what still needs each'
            cand rotate 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used'
            cand rekey 'Finish or repeat a rotation''s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)'
            cand retire 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;key;help;list'= {
        }
        &'authctl;key;help;rotate'= {
        }
        &'authctl;key;help;rekey'= {
        }
        &'authctl;key;help;retire'= {
        }
        &'authctl;key;help;help'= {
        }
        &'authctl;org'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Create an organisation'
            cand list 'List organisations'
            cand delete 'Delete an empty organisation'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;org;add'= {
            cand --mfa-method 'The second factor its users get by default'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;org;list'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;org;delete'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;org;help'= {
            cand add 'Create an organisation'
            cand list 'List organisations'
            cand delete 'Delete an empty organisation'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;org;help;add'= {
        }
        &'authctl;org;help;list'= {
        }
        &'authctl;org;help;delete'= {
        }
        &'authctl;org;help;help'= {
        }
        &'authctl;group'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Create a group'
            cand set 'Change whether a group requires a second factor (and a passkey)'
            cand list 'List groups'
            cand delete 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;group;add'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --require-2fa 'Members must use a second factor before they get a session'
            cand --require-passkey 'Members must use a passkey as their second factor (TOTP and emailed codes refused) when the policy says so: `policy set mfa.passkey_required=groups`'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;group;set'= {
            cand --require-2fa 'require-2fa'
            cand --require-passkey 'Whether members must use a passkey (with mfa.passkey_required=groups)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;group;list'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;group;delete'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;group;help'= {
            cand add 'Create a group'
            cand set 'Change whether a group requires a second factor (and a passkey)'
            cand list 'List groups'
            cand delete 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;group;help;add'= {
        }
        &'authctl;group;help;set'= {
        }
        &'authctl;group;help;list'= {
        }
        &'authctl;group;help;delete'= {
        }
        &'authctl;group;help;help'= {
        }
        &'authctl;policy'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand show 'Show every setting, its value and default'
            cand set 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9'
            cand preset 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;policy;show'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;policy;set'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;policy;preset'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --show 'Print each setting, its current and its preset value and why; change nothing'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;policy;help'= {
            cand show 'Show every setting, its value and default'
            cand set 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9'
            cand preset 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;policy;help;show'= {
        }
        &'authctl;policy;help;set'= {
        }
        &'authctl;policy;help;preset'= {
        }
        &'authctl;policy;help;help'= {
        }
        &'authctl;session'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List live sessions'
            cand revoke 'End one session by id, or every session of a user'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;session;list'= {
            cand --user 'Only this user''s sessions'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;session;revoke'= {
            cand --user 'End every session of this user'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;session;help'= {
            cand list 'List live sessions'
            cand revoke 'End one session by id, or every session of a user'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;session;help;list'= {
        }
        &'authctl;session;help;revoke'= {
        }
        &'authctl;session;help;help'= {
        }
        &'authctl;terms'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Publish a new version; users accept it at their next login (see the terms.mode policy)'
            cand show 'Show the current version'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;terms;set'= {
            cand --version 'The version name, e.g. 2026-11 (unique; a published version never changes)'
            cand --file 'A UTF-8 text file with the terms, at most 256 KiB (''-'' for standard input)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'authctl;terms;show'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;terms;help'= {
            cand set 'Publish a new version; users accept it at their next login (see the terms.mode policy)'
            cand show 'Show the current version'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;terms;help;set'= {
        }
        &'authctl;terms;help;show'= {
        }
        &'authctl;terms;help;help'= {
        }
        &'authctl;questions'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it'
            cand show 'Show the list in force (the admin''s, or the built-in default)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;questions;set'= {
            cand --file 'A UTF-8 text file, one question per line (''-'' for standard input)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;questions;show'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;questions;help'= {
            cand set 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it'
            cand show 'Show the list in force (the admin''s, or the built-in default)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;questions;help;set'= {
        }
        &'authctl;questions;help;show'= {
        }
        &'authctl;questions;help;help'= {
        }
        &'authctl;import'= {
            cand --format 'The file format [default: from the extension, .csv or else jsonl]'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --dry-run 'Check every line and report, but create nothing'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})'
            cand list 'List clients'
            cand show 'Show one client (by name or client_id)'
            cand remove 'Remove a client and every code, token and consent issued to it'
            cand rotate-secret 'Give a confidential client a new secret (printed once); the old one stops working'
            cand rotate-keys 'Make new signing keys; the old ones stay in the JWKS until their tokens expire'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;client;add'= {
            cand --redirect-uri 'Where authd may send the browser back with a code (repeatable). Matched exactly, byte for byte: register every URI the application uses'
            cand --group 'Only members of this group may sign in to the client (repeatable: any of them)'
            cand --id-token-alg 'How its ID tokens are signed: RS256 (what every client reads), EdDSA (Ed25519) or ES256 (ECDSA on P-256). Access tokens stay RS256 (only authd reads them)'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --public 'No secret (a single-page or native app): the client must use PKCE (S256)'
            cand --trusted 'Skip the consent page (an application of this site)'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client;list'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client;show'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client;remove'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client;rotate-secret'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client;rotate-keys'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;client;help'= {
            cand add 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})'
            cand list 'List clients'
            cand show 'Show one client (by name or client_id)'
            cand remove 'Remove a client and every code, token and consent issued to it'
            cand rotate-secret 'Give a confidential client a new secret (printed once); the old one stops working'
            cand rotate-keys 'Make new signing keys; the old ones stay in the JWKS until their tokens expire'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;client;help;add'= {
        }
        &'authctl;client;help;list'= {
        }
        &'authctl;client;help;show'= {
        }
        &'authctl;client;help;remove'= {
        }
        &'authctl;client;help;rotate-secret'= {
        }
        &'authctl;client;help;rotate-keys'= {
        }
        &'authctl;client;help;help'= {
        }
        &'authctl;generate'= {
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand completions 'Shell completions (to standard output, or a file in --out-dir)'
            cand man 'Man pages for authctl and each subcommand'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;generate;completions'= {
            cand --out-dir 'out-dir'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;generate;man'= {
            cand --out-dir 'out-dir'
            cand --db 'The database file'
            cand --key-file 'The secret-encryption key file [default: DB.key]'
            cand --json 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
            cand -y 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand --yes 'Answer yes to confirmations (needed for destructive commands without a terminal)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'authctl;generate;help'= {
            cand completions 'Shell completions (to standard output, or a file in --out-dir)'
            cand man 'Man pages for authctl and each subcommand'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;generate;help;completions'= {
        }
        &'authctl;generate;help;man'= {
        }
        &'authctl;generate;help;help'= {
        }
        &'authctl;help'= {
            cand init 'Create the database and its secret-encryption key file (refuses to overwrite)'
            cand user 'Add, list, show, change, disable, enable and delete users'
            cand passwd 'Set a user''s password (asked twice on a terminal) or force a change at next login'
            cand enroll 'Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes'
            cand totp 'Diagnose authenticator codes'
            cand reset-2fa 'Remove every authenticator app, passkeys, recovery codes and remembered devices; the user enrols again'
            cand unlock 'Clear a user''s lockout and failure count'
            cand device 'List and revoke remembered devices'
            cand passkey 'List and remove a user''s passkeys (WebAuthn credentials they registered)'
            cand audit 'Query the audit log; `audit verify|prune|export` check, cut and ship it'
            cand backup 'A consistent copy of the database into FILE while authd serves (never over an existing file). The key file is not in it: keep a copy of the key separately'
            cand db 'Move the database to another engine: `db copy --to postgres://…` copies this SQLite database (--db) into an empty PostgreSQL database, for running several nodes'
            cand verify 'Check the database: integrity, schema version, that the key opens every secret, the audit chain. Exits 1 naming what is wrong'
            cand key 'The key file''s keys: list them, rotate to a new one, retire an old one'
            cand org 'Organisations (tenants)'
            cand group 'Groups and whether they require two-factor authentication'
            cand policy 'Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…)'
            cand session 'List and revoke login sessions'
            cand terms 'Publish the terms and conditions users must accept'
            cand questions 'The list of security questions users pick from (unknown names are shown questions of the same list, so the questions reveal nobody)'
            cand import 'Create many users from a JSON-lines or CSV file'
            cand client 'OpenID Connect clients (relying parties) and the provider''s signing keys'
            cand generate 'Generate shell completions and man pages'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'authctl;help;init'= {
        }
        &'authctl;help;user'= {
            cand add 'Create a user'
            cand list 'List users'
            cand show 'Show one user'
            cand set 'Change a user''s email, organisation, role or groups'
            cand disable 'Disable a user: no login; sessions and remembered devices end'
            cand enable 'Enable a disabled user'
            cand delete 'Delete a user and everything attached (asks for confirmation; --yes to skip)'
            cand reset-link 'Print a one-time link (and its QR code) with which the user sets a new password'
        }
        &'authctl;help;user;add'= {
        }
        &'authctl;help;user;list'= {
        }
        &'authctl;help;user;show'= {
        }
        &'authctl;help;user;set'= {
        }
        &'authctl;help;user;disable'= {
        }
        &'authctl;help;user;enable'= {
        }
        &'authctl;help;user;delete'= {
        }
        &'authctl;help;user;reset-link'= {
        }
        &'authctl;help;passwd'= {
        }
        &'authctl;help;enroll'= {
        }
        &'authctl;help;totp'= {
            cand test 'Check whether CODE matches one of the user''s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise'
        }
        &'authctl;help;totp;test'= {
        }
        &'authctl;help;reset-2fa'= {
        }
        &'authctl;help;unlock'= {
        }
        &'authctl;help;device'= {
            cand list 'List live remembered devices'
            cand revoke 'Revoke one device by id, or all of a user''s devices'
        }
        &'authctl;help;device;list'= {
        }
        &'authctl;help;device;revoke'= {
        }
        &'authctl;help;passkey'= {
            cand list 'List a user''s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified'
            cand remove 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all'
        }
        &'authctl;help;passkey;list'= {
        }
        &'authctl;help;passkey;remove'= {
        }
        &'authctl;help;audit'= {
            cand verify 'Check every row''s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved'
            cand prune 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut'
            cand export 'Print rows as JSON lines with their MACs, oldest first, for log shipping'
        }
        &'authctl;help;audit;verify'= {
        }
        &'authctl;help;audit;prune'= {
        }
        &'authctl;help;audit;export'= {
        }
        &'authctl;help;backup'= {
        }
        &'authctl;help;db'= {
            cand copy 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source''s key file.'
        }
        &'authctl;help;db;copy'= {
        }
        &'authctl;help;verify'= {
        }
        &'authctl;help;key'= {
            cand list 'The keys of the key file (which one is current) and what still needs each'
            cand rotate 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used'
            cand rekey 'Finish or repeat a rotation''s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)'
            cand retire 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)'
        }
        &'authctl;help;key;list'= {
        }
        &'authctl;help;key;rotate'= {
        }
        &'authctl;help;key;rekey'= {
        }
        &'authctl;help;key;retire'= {
        }
        &'authctl;help;org'= {
            cand add 'Create an organisation'
            cand list 'List organisations'
            cand delete 'Delete an empty organisation'
        }
        &'authctl;help;org;add'= {
        }
        &'authctl;help;org;list'= {
        }
        &'authctl;help;org;delete'= {
        }
        &'authctl;help;group'= {
            cand add 'Create a group'
            cand set 'Change whether a group requires a second factor (and a passkey)'
            cand list 'List groups'
            cand delete 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)'
        }
        &'authctl;help;group;add'= {
        }
        &'authctl;help;group;set'= {
        }
        &'authctl;help;group;list'= {
        }
        &'authctl;help;group;delete'= {
        }
        &'authctl;help;policy'= {
            cand show 'Show every setting, its value and default'
            cand set 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9'
            cand preset 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing'
        }
        &'authctl;help;policy;show'= {
        }
        &'authctl;help;policy;set'= {
        }
        &'authctl;help;policy;preset'= {
        }
        &'authctl;help;session'= {
            cand list 'List live sessions'
            cand revoke 'End one session by id, or every session of a user'
        }
        &'authctl;help;session;list'= {
        }
        &'authctl;help;session;revoke'= {
        }
        &'authctl;help;terms'= {
            cand set 'Publish a new version; users accept it at their next login (see the terms.mode policy)'
            cand show 'Show the current version'
        }
        &'authctl;help;terms;set'= {
        }
        &'authctl;help;terms;show'= {
        }
        &'authctl;help;questions'= {
            cand set 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it'
            cand show 'Show the list in force (the admin''s, or the built-in default)'
        }
        &'authctl;help;questions;set'= {
        }
        &'authctl;help;questions;show'= {
        }
        &'authctl;help;import'= {
        }
        &'authctl;help;client'= {
            cand add 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})'
            cand list 'List clients'
            cand show 'Show one client (by name or client_id)'
            cand remove 'Remove a client and every code, token and consent issued to it'
            cand rotate-secret 'Give a confidential client a new secret (printed once); the old one stops working'
            cand rotate-keys 'Make new signing keys; the old ones stay in the JWKS until their tokens expire'
        }
        &'authctl;help;client;add'= {
        }
        &'authctl;help;client;list'= {
        }
        &'authctl;help;client;show'= {
        }
        &'authctl;help;client;remove'= {
        }
        &'authctl;help;client;rotate-secret'= {
        }
        &'authctl;help;client;rotate-keys'= {
        }
        &'authctl;help;generate'= {
            cand completions 'Shell completions (to standard output, or a file in --out-dir)'
            cand man 'Man pages for authctl and each subcommand'
        }
        &'authctl;help;generate;completions'= {
        }
        &'authctl;help;generate;man'= {
        }
        &'authctl;help;help'= {
        }
    ]
    $completions[$command]
}
