# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_authctl_global_optspecs
    string join \n db= key-file= json y/yes h/help V/version
end

function __fish_authctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_authctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_authctl_using_subcommand
    set -l cmd (__fish_authctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c authctl -n "__fish_authctl_needs_command" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_needs_command" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_needs_command" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_needs_command" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c authctl -n "__fish_authctl_needs_command" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "init" -d 'Create the database and its secret-encryption key file (refuses to overwrite)'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "user" -d 'Add, list, show, change, disable, enable and delete users'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "passwd" -d 'Set a user\'s password (asked twice on a terminal) or force a change at next login'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "enroll" -d 'Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "totp" -d 'Diagnose authenticator codes'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "reset-2fa" -d 'Remove every authenticator app, passkeys, recovery codes and remembered devices; the user enrols again'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "unlock" -d 'Clear a user\'s lockout and failure count'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "device" -d 'List and revoke remembered devices'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "passkey" -d 'List and remove a user\'s passkeys (WebAuthn credentials they registered)'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "audit" -d 'Query the audit log; `audit verify|prune|export` check, cut and ship it'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "backup" -d 'A consistent copy of the database into FILE while authd serves (never over an existing file). The key file is not in it: keep a copy of the key separately'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "db" -d 'Move the database to another engine: `db copy --to postgres://…` copies this SQLite database (--db) into an empty PostgreSQL database, for running several nodes'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "verify" -d 'Check the database: integrity, schema version, that the key opens every secret, the audit chain. Exits 1 naming what is wrong'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "key" -d 'The key file\'s keys: list them, rotate to a new one, retire an old one'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "org" -d 'Organisations (tenants)'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "group" -d 'Groups and whether they require two-factor authentication'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "policy" -d 'Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…)'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "session" -d 'List and revoke login sessions'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "terms" -d 'Publish the terms and conditions users must accept'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "questions" -d 'The list of security questions users pick from (unknown names are shown questions of the same list, so the questions reveal nobody)'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "import" -d 'Create many users from a JSON-lines or CSV file'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "client" -d 'OpenID Connect clients (relying parties) and the provider\'s signing keys'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "generate" -d 'Generate shell completions and man pages'
complete -c authctl -n "__fish_authctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand init" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand init" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand init" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand init" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand init" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand init" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "add" -d 'Create a user'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "list" -d 'List users'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "show" -d 'Show one user'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "set" -d 'Change a user\'s email, organisation, role or groups'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "disable" -d 'Disable a user: no login; sessions and remembered devices end'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "enable" -d 'Enable a disabled user'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "delete" -d 'Delete a user and everything attached (asks for confirmation; --yes to skip)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "reset-link" -d 'Print a one-time link (and its QR code) with which the user sets a new password'
complete -c authctl -n "__fish_authctl_using_subcommand user; and not __fish_seen_subcommand_from add list show set disable enable delete reset-link help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l email -d 'The user\'s email address (for emailed codes and notices)' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l org -d 'The organisation [default: "default", created on first use]' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l group -d 'A group to join (repeatable). Groups must exist (`authctl group add`)' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l role -d 'The role' -r -f -a "user\t''
org-admin\t''
admin\t''"
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l password-stdin -d 'Read the password from the first line of standard input (for scripts)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l generate-password -d 'Generate a strong random password and print it once'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l must-change-password -d 'Force a password change at the first login'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -l org -d 'Only users of this organisation' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -l group -d 'Only members of this group' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -l locked -d 'Only locked users'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from show" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from show" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from show" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from show" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l email -d 'New email address' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l org -d 'Move to another organisation' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l role -d 'New role' -r -f -a "user\t''
org-admin\t''
admin\t''"
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l add-group -d 'Join a group (repeatable)' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l remove-group -d 'Leave a group (repeatable)' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from set" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from disable" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from disable" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from disable" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from disable" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from disable" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from enable" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from enable" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from enable" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from enable" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from enable" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from delete" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from delete" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from delete" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from delete" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l ttl -d 'How long the link works: 30m, 24h, 7d… (1 minute to 30 days)' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l url -d 'The portal\'s public URL the link starts with (authd\'s --public-url)' -r
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l enrol -d 'A set-up link for a new account rather than a password reset: it too sets the password only; the second factor is set up at the first sign-in (when the account needs one), an existing one is kept'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l no-qr -d 'Do not print the QR code'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from reset-link" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "add" -d 'Create a user'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "list" -d 'List users'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one user'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "set" -d 'Change a user\'s email, organisation, role or groups'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Disable a user: no login; sessions and remembered devices end'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Enable a disabled user'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a user and everything attached (asks for confirmation; --yes to skip)'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "reset-link" -d 'Print a one-time link (and its QR code) with which the user sets a new password'
complete -c authctl -n "__fish_authctl_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -l password-stdin -d 'Read the password from the first line of standard input (for scripts)'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -l generate-password -d 'Generate a strong random password and print it once'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -l expire -d 'Force a password change at the next login (alone: without setting a new password)'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand passwd" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l group -d 'Every member of GROUP instead: write an enrolment letter per member (with --letters), each with the QR code of a one-time set-up link, and an index' -r
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l letters -d 'The folder for the letters (created; existing letters are not overwritten)' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l ttl -d 'With --letters: how long each link works (1 minute to 30 days)' -r
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l url -d 'With --letters: the portal\'s public URL the links start with (authd\'s --public-url)' -r
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l method -d 'The second factor: an authenticator app (TOTP) or codes sent by email' -r -f -a "totp\t''
email\t''"
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l png -d 'Also write the QR code as a PNG image to FILE' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l no-qr -d 'Do not print the QR code in the terminal'
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand enroll" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -f -a "test" -d 'Check whether CODE matches one of the user\'s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and not __fish_seen_subcommand_from test help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from test" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from test" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from test" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from test" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from help" -f -a "test" -d 'Check whether CODE matches one of the user\'s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise'
complete -c authctl -n "__fish_authctl_using_subcommand totp; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand reset-2fa" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand reset-2fa" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand reset-2fa" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand reset-2fa" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand reset-2fa" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand reset-2fa" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand unlock" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand unlock" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand unlock" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand unlock" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand unlock" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand unlock" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -f -a "list" -d 'List live remembered devices'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -f -a "revoke" -d 'Revoke one device by id, or all of a user\'s devices'
complete -c authctl -n "__fish_authctl_using_subcommand device; and not __fish_seen_subcommand_from list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s devices' -r
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -l user -d 'Revoke every device of this user' -r
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "list" -d 'List live remembered devices'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke one device by id, or all of a user\'s devices'
complete -c authctl -n "__fish_authctl_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -f -a "list" -d 'List a user\'s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -f -a "remove" -d 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and not __fish_seen_subcommand_from list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from remove" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from remove" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from remove" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from remove" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from help" -f -a "list" -d 'List a user\'s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all'
complete -c authctl -n "__fish_authctl_using_subcommand passkey; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l user -d 'Rows about this user (by account, or the username as typed)' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l org -d 'Rows of this organisation' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l event -d 'An event (login.password) or a prefix ending in \'.\' or \'*\' (login.)' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l outcome -r -f -a "success\t''
failure\t''"
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l ip -d 'Rows from this client IP address' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l since -d 'From this time: RFC 3339, a date (2026-11-23) or a duration back from now (1h, 7d)' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l until -d 'Up to this time (same forms as --since)' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l limit -d 'At most N rows, the newest (0: no limit); when more match, a note on stderr says so' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l format -d 'Output format (--json implies json: one JSON object per line)' -r -f -a "table\t''
json\t''
csv\t''"
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -s f -l follow -d 'Keep running and print new rows as they are written'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -f -a "verify" -d 'Check every row\'s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -f -a "prune" -d 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -f -a "export" -d 'Print rows as JSON lines with their MACs, oldest first, for log shipping'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and not __fish_seen_subcommand_from verify prune export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from verify" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from verify" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from verify" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from verify" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -l before -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from prune" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -l since -d 'From this time (same forms as `audit --since`)' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -l after-id -d 'Only rows after this id (what the last export ended with)' -r
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check every row\'s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "export" -d 'Print rows as JSON lines with their MACs, oldest first, for log shipping'
complete -c authctl -n "__fish_authctl_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand backup" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand backup" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand backup" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand backup" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand backup" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand backup" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -f -a "copy" -d 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source\'s key file.'
complete -c authctl -n "__fish_authctl_using_subcommand db; and not __fish_seen_subcommand_from copy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -l to -d 'The target: postgres://user[:password]@host[:port]/dbname (an empty database)' -r
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from copy" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "copy" -d 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source\'s key file.'
complete -c authctl -n "__fish_authctl_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand verify" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand verify" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand verify" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand verify" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand verify" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand verify" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -f -a "list" -d 'The keys of the key file (which one is current) and what still needs each'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -f -a "rotate" -d 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -f -a "rekey" -d 'Finish or repeat a rotation\'s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -f -a "retire" -d 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and not __fish_seen_subcommand_from list rotate rekey retire help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rotate" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rotate" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rotate" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rotate" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rotate" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rekey" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rekey" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rekey" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rekey" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rekey" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from rekey" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from retire" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from retire" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from retire" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from retire" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from retire" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from retire" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "list" -d 'The keys of the key file (which one is current) and what still needs each'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "rekey" -d 'Finish or repeat a rotation\'s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "retire" -d 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)'
complete -c authctl -n "__fish_authctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -f -a "add" -d 'Create an organisation'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -f -a "list" -d 'List organisations'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -f -a "delete" -d 'Delete an empty organisation'
complete -c authctl -n "__fish_authctl_using_subcommand org; and not __fish_seen_subcommand_from add list delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -l mfa-method -d 'The second factor its users get by default' -r -f -a "totp\t''
email\t''"
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from delete" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from delete" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from delete" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from delete" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from help" -f -a "add" -d 'Create an organisation'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from help" -f -a "list" -d 'List organisations'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete an empty organisation'
complete -c authctl -n "__fish_authctl_using_subcommand org; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -f -a "add" -d 'Create a group'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -f -a "set" -d 'Change whether a group requires a second factor (and a passkey)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -f -a "list" -d 'List groups'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -f -a "delete" -d 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and not __fish_seen_subcommand_from add set list delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -l require-2fa -d 'Members must use a second factor before they get a session'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -l require-passkey -d 'Members must use a passkey as their second factor (TOTP and emailed codes refused) when the policy says so: `policy set mfa.passkey_required=groups`'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -l require-2fa -r -f -a "true\t''
false\t''"
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -l require-passkey -d 'Whether members must use a passkey (with mfa.passkey_required=groups)' -r -f -a "true\t''
false\t''"
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from set" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from delete" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from delete" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from delete" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from delete" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "add" -d 'Create a group'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "set" -d 'Change whether a group requires a second factor (and a passkey)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "list" -d 'List groups'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)'
complete -c authctl -n "__fish_authctl_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -f -a "show" -d 'Show every setting, its value and default'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -f -a "set" -d 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -f -a "preset" -d 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and not __fish_seen_subcommand_from show set preset help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from show" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from show" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from show" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from show" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from set" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from set" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from set" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from set" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from set" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -l show -d 'Print each setting, its current and its preset value and why; change nothing'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from preset" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show every setting, its value and default'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "set" -d 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "preset" -d 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing'
complete -c authctl -n "__fish_authctl_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -f -a "list" -d 'List live sessions'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -f -a "revoke" -d 'End one session by id, or every session of a user'
complete -c authctl -n "__fish_authctl_using_subcommand session; and not __fish_seen_subcommand_from list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s sessions' -r
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -l user -d 'End every session of this user' -r
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "list" -d 'List live sessions'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'End one session by id, or every session of a user'
complete -c authctl -n "__fish_authctl_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -f -a "set" -d 'Publish a new version; users accept it at their next login (see the terms.mode policy)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -f -a "show" -d 'Show the current version'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and not __fish_seen_subcommand_from set show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -l version -d 'The version name, e.g. 2026-11 (unique; a published version never changes)' -r
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -l file -d 'A UTF-8 text file with the terms, at most 256 KiB (\'-\' for standard input)' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from show" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from show" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from show" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from show" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from help" -f -a "set" -d 'Publish a new version; users accept it at their next login (see the terms.mode policy)'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show the current version'
complete -c authctl -n "__fish_authctl_using_subcommand terms; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -f -a "set" -d 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -f -a "show" -d 'Show the list in force (the admin\'s, or the built-in default)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and not __fish_seen_subcommand_from set show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -l file -d 'A UTF-8 text file, one question per line (\'-\' for standard input)' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from set" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from show" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from show" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from show" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from show" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from help" -f -a "set" -d 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show the list in force (the admin\'s, or the built-in default)'
complete -c authctl -n "__fish_authctl_using_subcommand questions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand import" -l format -d 'The file format [default: from the extension, .csv or else jsonl]' -r -f -a "jsonl\t''
csv\t''"
complete -c authctl -n "__fish_authctl_using_subcommand import" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand import" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand import" -l dry-run -d 'Check every line and report, but create nothing'
complete -c authctl -n "__fish_authctl_using_subcommand import" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand import" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand import" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand import" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "add" -d 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "list" -d 'List clients'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "show" -d 'Show one client (by name or client_id)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "remove" -d 'Remove a client and every code, token and consent issued to it'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "rotate-secret" -d 'Give a confidential client a new secret (printed once); the old one stops working'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "rotate-keys" -d 'Make new signing keys; the old ones stay in the JWKS until their tokens expire'
complete -c authctl -n "__fish_authctl_using_subcommand client; and not __fish_seen_subcommand_from add list show remove rotate-secret rotate-keys help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l redirect-uri -d 'Where authd may send the browser back with a code (repeatable). Matched exactly, byte for byte: register every URI the application uses' -r
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l group -d 'Only members of this group may sign in to the client (repeatable: any of them)' -r
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l id-token-alg -d 'How its ID tokens are signed: RS256 (what every client reads), EdDSA (Ed25519) or ES256 (ECDSA on P-256). Access tokens stay RS256 (only authd reads them)' -r -f -a "RS256\t''
EdDSA\t''
ES256\t''"
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l public -d 'No secret (a single-page or native app): the client must use PKCE (S256)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l trusted -d 'Skip the consent page (an application of this site)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from list" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from list" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from list" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from list" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from show" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from show" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from show" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from show" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from remove" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from remove" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from remove" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from remove" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-secret" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-secret" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-secret" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-secret" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-secret" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-secret" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-keys" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-keys" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-keys" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-keys" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-keys" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from rotate-keys" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "add" -d 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "list" -d 'List clients'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one client (by name or client_id)'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a client and every code, token and consent issued to it'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "rotate-secret" -d 'Give a confidential client a new secret (printed once); the old one stops working'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "rotate-keys" -d 'Make new signing keys; the old ones stay in the JWKS until their tokens expire'
complete -c authctl -n "__fish_authctl_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -f -a "completions" -d 'Shell completions (to standard output, or a file in --out-dir)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -f -a "man" -d 'Man pages for authctl and each subcommand'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and not __fish_seen_subcommand_from completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -l out-dir -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from completions" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -l out-dir -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -l db -d 'The database file' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -l key-file -d 'The secret-encryption key file [default: DB.key]' -r -F
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -l json -d 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -s y -l yes -d 'Answer yes to confirmations (needed for destructive commands without a terminal)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from man" -s V -l version -d 'Print version'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'Shell completions (to standard output, or a file in --out-dir)'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'Man pages for authctl and each subcommand'
complete -c authctl -n "__fish_authctl_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "init" -d 'Create the database and its secret-encryption key file (refuses to overwrite)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "user" -d 'Add, list, show, change, disable, enable and delete users'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "passwd" -d 'Set a user\'s password (asked twice on a terminal) or force a change at next login'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "enroll" -d 'Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "totp" -d 'Diagnose authenticator codes'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "reset-2fa" -d 'Remove every authenticator app, passkeys, recovery codes and remembered devices; the user enrols again'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "unlock" -d 'Clear a user\'s lockout and failure count'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "device" -d 'List and revoke remembered devices'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "passkey" -d 'List and remove a user\'s passkeys (WebAuthn credentials they registered)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "audit" -d 'Query the audit log; `audit verify|prune|export` check, cut and ship it'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "backup" -d 'A consistent copy of the database into FILE while authd serves (never over an existing file). The key file is not in it: keep a copy of the key separately'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "db" -d 'Move the database to another engine: `db copy --to postgres://…` copies this SQLite database (--db) into an empty PostgreSQL database, for running several nodes'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "verify" -d 'Check the database: integrity, schema version, that the key opens every secret, the audit chain. Exits 1 naming what is wrong'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "key" -d 'The key file\'s keys: list them, rotate to a new one, retire an old one'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "org" -d 'Organisations (tenants)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "group" -d 'Groups and whether they require two-factor authentication'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "policy" -d 'Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "session" -d 'List and revoke login sessions'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "terms" -d 'Publish the terms and conditions users must accept'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "questions" -d 'The list of security questions users pick from (unknown names are shown questions of the same list, so the questions reveal nobody)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "import" -d 'Create many users from a JSON-lines or CSV file'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "client" -d 'OpenID Connect clients (relying parties) and the provider\'s signing keys'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "generate" -d 'Generate shell completions and man pages'
complete -c authctl -n "__fish_authctl_using_subcommand help; and not __fish_seen_subcommand_from init user passwd enroll totp reset-2fa unlock device passkey audit backup db verify key org group policy session terms questions import client generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "add" -d 'Create a user'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "list" -d 'List users'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "show" -d 'Show one user'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "set" -d 'Change a user\'s email, organisation, role or groups'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "disable" -d 'Disable a user: no login; sessions and remembered devices end'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "enable" -d 'Enable a disabled user'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "delete" -d 'Delete a user and everything attached (asks for confirmation; --yes to skip)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "reset-link" -d 'Print a one-time link (and its QR code) with which the user sets a new password'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from totp" -f -a "test" -d 'Check whether CODE matches one of the user\'s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "list" -d 'List live remembered devices'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "revoke" -d 'Revoke one device by id, or all of a user\'s devices'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from passkey" -f -a "list" -d 'List a user\'s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from passkey" -f -a "remove" -d 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Check every row\'s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "prune" -d 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "export" -d 'Print rows as JSON lines with their MACs, oldest first, for log shipping'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from db" -f -a "copy" -d 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source\'s key file.'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "list" -d 'The keys of the key file (which one is current) and what still needs each'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "rotate" -d 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "rekey" -d 'Finish or repeat a rotation\'s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "retire" -d 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from org" -f -a "add" -d 'Create an organisation'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from org" -f -a "list" -d 'List organisations'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from org" -f -a "delete" -d 'Delete an empty organisation'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "add" -d 'Create a group'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "set" -d 'Change whether a group requires a second factor (and a passkey)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "list" -d 'List groups'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "delete" -d 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "show" -d 'Show every setting, its value and default'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "set" -d 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "preset" -d 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "list" -d 'List live sessions'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "revoke" -d 'End one session by id, or every session of a user'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from terms" -f -a "set" -d 'Publish a new version; users accept it at their next login (see the terms.mode policy)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from terms" -f -a "show" -d 'Show the current version'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from questions" -f -a "set" -d 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from questions" -f -a "show" -d 'Show the list in force (the admin\'s, or the built-in default)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "add" -d 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "list" -d 'List clients'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "show" -d 'Show one client (by name or client_id)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "remove" -d 'Remove a client and every code, token and consent issued to it'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "rotate-secret" -d 'Give a confidential client a new secret (printed once); the old one stops working'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "rotate-keys" -d 'Make new signing keys; the old ones stay in the JWKS until their tokens expire'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'Shell completions (to standard output, or a file in --out-dir)'
complete -c authctl -n "__fish_authctl_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'Man pages for authctl and each subcommand'
