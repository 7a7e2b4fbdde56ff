
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'authctl' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'authctl'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'authctl' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create the database and its secret-encryption key file (refuses to overwrite)')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Add, list, show, change, disable, enable and delete users')
            [CompletionResult]::new('passwd', 'passwd', [CompletionResultType]::ParameterValue, 'Set a user''s password (asked twice on a terminal) or force a change at next login')
            [CompletionResult]::new('enroll', 'enroll', [CompletionResultType]::ParameterValue, 'Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes')
            [CompletionResult]::new('totp', 'totp', [CompletionResultType]::ParameterValue, 'Diagnose authenticator codes')
            [CompletionResult]::new('reset-2fa', 'reset-2fa', [CompletionResultType]::ParameterValue, 'Remove every authenticator app, passkeys, recovery codes and remembered devices; the user enrols again')
            [CompletionResult]::new('unlock', 'unlock', [CompletionResultType]::ParameterValue, 'Clear a user''s lockout and failure count')
            [CompletionResult]::new('device', 'device', [CompletionResultType]::ParameterValue, 'List and revoke remembered devices')
            [CompletionResult]::new('passkey', 'passkey', [CompletionResultType]::ParameterValue, 'List and remove a user''s passkeys (WebAuthn credentials they registered)')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Query the audit log; `audit verify|prune|export` check, cut and ship it')
            [CompletionResult]::new('backup', 'backup', [CompletionResultType]::ParameterValue, 'A consistent copy of the database into FILE while authd serves (never over an existing file). The key file is not in it: keep a copy of the key separately')
            [CompletionResult]::new('db', 'db', [CompletionResultType]::ParameterValue, 'Move the database to another engine: `db copy --to postgres://…` copies this SQLite database (--db) into an empty PostgreSQL database, for running several nodes')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check the database: integrity, schema version, that the key opens every secret, the audit chain. Exits 1 naming what is wrong')
            [CompletionResult]::new('key', 'key', [CompletionResultType]::ParameterValue, 'The key file''s keys: list them, rotate to a new one, retire an old one')
            [CompletionResult]::new('org', 'org', [CompletionResultType]::ParameterValue, 'Organisations (tenants)')
            [CompletionResult]::new('group', 'group', [CompletionResultType]::ParameterValue, 'Groups and whether they require two-factor authentication')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…)')
            [CompletionResult]::new('session', 'session', [CompletionResultType]::ParameterValue, 'List and revoke login sessions')
            [CompletionResult]::new('terms', 'terms', [CompletionResultType]::ParameterValue, 'Publish the terms and conditions users must accept')
            [CompletionResult]::new('questions', 'questions', [CompletionResultType]::ParameterValue, 'The list of security questions users pick from (unknown names are shown questions of the same list, so the questions reveal nobody)')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Create many users from a JSON-lines or CSV file')
            [CompletionResult]::new('client', 'client', [CompletionResultType]::ParameterValue, 'OpenID Connect clients (relying parties) and the provider''s signing keys')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Generate shell completions and man pages')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;init' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create a user')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one user')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change a user''s email, organisation, role or groups')
            [CompletionResult]::new('disable', 'disable', [CompletionResultType]::ParameterValue, 'Disable a user: no login; sessions and remembered devices end')
            [CompletionResult]::new('enable', 'enable', [CompletionResultType]::ParameterValue, 'Enable a disabled user')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user and everything attached (asks for confirmation; --yes to skip)')
            [CompletionResult]::new('reset-link', 'reset-link', [CompletionResultType]::ParameterValue, 'Print a one-time link (and its QR code) with which the user sets a new password')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;user;add' {
            [CompletionResult]::new('--email', '--email', [CompletionResultType]::ParameterName, 'The user''s email address (for emailed codes and notices)')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'The organisation [default: "default", created on first use]')
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'A group to join (repeatable). Groups must exist (`authctl group add`)')
            [CompletionResult]::new('--role', '--role', [CompletionResultType]::ParameterName, 'The role')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--password-stdin', '--password-stdin', [CompletionResultType]::ParameterName, 'Read the password from the first line of standard input (for scripts)')
            [CompletionResult]::new('--generate-password', '--generate-password', [CompletionResultType]::ParameterName, 'Generate a strong random password and print it once')
            [CompletionResult]::new('--must-change-password', '--must-change-password', [CompletionResultType]::ParameterName, 'Force a password change at the first login')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;list' {
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'Only users of this organisation')
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'Only members of this group')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--locked', '--locked', [CompletionResultType]::ParameterName, 'Only locked users')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;show' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;set' {
            [CompletionResult]::new('--email', '--email', [CompletionResultType]::ParameterName, 'New email address')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'Move to another organisation')
            [CompletionResult]::new('--role', '--role', [CompletionResultType]::ParameterName, 'New role')
            [CompletionResult]::new('--add-group', '--add-group', [CompletionResultType]::ParameterName, 'Join a group (repeatable)')
            [CompletionResult]::new('--remove-group', '--remove-group', [CompletionResultType]::ParameterName, 'Leave a group (repeatable)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;disable' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;enable' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;delete' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;reset-link' {
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'How long the link works: 30m, 24h, 7d… (1 minute to 30 days)')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'The portal''s public URL the link starts with (authd''s --public-url)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--enrol', '--enrol', [CompletionResultType]::ParameterName, 'A set-up link for a new account rather than a password reset: it too sets the password only; the second factor is set up at the first sign-in (when the account needs one), an existing one is kept')
            [CompletionResult]::new('--no-qr', '--no-qr', [CompletionResultType]::ParameterName, 'Do not print the QR code')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;user;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create a user')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one user')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change a user''s email, organisation, role or groups')
            [CompletionResult]::new('disable', 'disable', [CompletionResultType]::ParameterValue, 'Disable a user: no login; sessions and remembered devices end')
            [CompletionResult]::new('enable', 'enable', [CompletionResultType]::ParameterValue, 'Enable a disabled user')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user and everything attached (asks for confirmation; --yes to skip)')
            [CompletionResult]::new('reset-link', 'reset-link', [CompletionResultType]::ParameterValue, 'Print a one-time link (and its QR code) with which the user sets a new password')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;user;help;add' {
            break
        }
        'authctl;user;help;list' {
            break
        }
        'authctl;user;help;show' {
            break
        }
        'authctl;user;help;set' {
            break
        }
        'authctl;user;help;disable' {
            break
        }
        'authctl;user;help;enable' {
            break
        }
        'authctl;user;help;delete' {
            break
        }
        'authctl;user;help;reset-link' {
            break
        }
        'authctl;user;help;help' {
            break
        }
        'authctl;passwd' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--password-stdin', '--password-stdin', [CompletionResultType]::ParameterName, 'Read the password from the first line of standard input (for scripts)')
            [CompletionResult]::new('--generate-password', '--generate-password', [CompletionResultType]::ParameterName, 'Generate a strong random password and print it once')
            [CompletionResult]::new('--expire', '--expire', [CompletionResultType]::ParameterName, 'Force a password change at the next login (alone: without setting a new password)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;enroll' {
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'Every member of GROUP instead: write an enrolment letter per member (with --letters), each with the QR code of a one-time set-up link, and an index')
            [CompletionResult]::new('--letters', '--letters', [CompletionResultType]::ParameterName, 'The folder for the letters (created; existing letters are not overwritten)')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'With --letters: how long each link works (1 minute to 30 days)')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'With --letters: the portal''s public URL the links start with (authd''s --public-url)')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'The second factor: an authenticator app (TOTP) or codes sent by email')
            [CompletionResult]::new('--png', '--png', [CompletionResultType]::ParameterName, 'Also write the QR code as a PNG image to FILE')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--no-qr', '--no-qr', [CompletionResultType]::ParameterName, 'Do not print the QR code in the terminal')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;totp' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Check whether CODE matches one of the user''s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;totp;test' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;totp;help' {
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Check whether CODE matches one of the user''s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;totp;help;test' {
            break
        }
        'authctl;totp;help;help' {
            break
        }
        'authctl;reset-2fa' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;unlock' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;device' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List live remembered devices')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke one device by id, or all of a user''s devices')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;device;list' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s devices')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;device;revoke' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Revoke every device of this user')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;device;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List live remembered devices')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke one device by id, or all of a user''s devices')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;device;help;list' {
            break
        }
        'authctl;device;help;revoke' {
            break
        }
        'authctl;device;help;help' {
            break
        }
        'authctl;passkey' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;passkey;list' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;passkey;remove' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;passkey;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;passkey;help;list' {
            break
        }
        'authctl;passkey;help;remove' {
            break
        }
        'authctl;passkey;help;help' {
            break
        }
        'authctl;audit' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Rows about this user (by account, or the username as typed)')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'Rows of this organisation')
            [CompletionResult]::new('--event', '--event', [CompletionResultType]::ParameterName, 'An event (login.password) or a prefix ending in ''.'' or ''*'' (login.)')
            [CompletionResult]::new('--outcome', '--outcome', [CompletionResultType]::ParameterName, 'outcome')
            [CompletionResult]::new('--ip', '--ip', [CompletionResultType]::ParameterName, 'Rows from this client IP address')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'From this time: RFC 3339, a date (2026-11-23) or a duration back from now (1h, 7d)')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'Up to this time (same forms as --since)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most N rows, the newest (0: no limit); when more match, a note on stderr says so')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format (--json implies json: one JSON object per line)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep running and print new rows as they are written')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep running and print new rows as they are written')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check every row''s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Print rows as JSON lines with their MACs, oldest first, for log shipping')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;audit;verify' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;audit;prune' {
            [CompletionResult]::new('--before', '--before', [CompletionResultType]::ParameterName, 'before')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;audit;export' {
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'From this time (same forms as `audit --since`)')
            [CompletionResult]::new('--after-id', '--after-id', [CompletionResultType]::ParameterName, 'Only rows after this id (what the last export ended with)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;audit;help' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check every row''s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Print rows as JSON lines with their MACs, oldest first, for log shipping')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;audit;help;verify' {
            break
        }
        'authctl;audit;help;prune' {
            break
        }
        'authctl;audit;help;export' {
            break
        }
        'authctl;audit;help;help' {
            break
        }
        'authctl;backup' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;db' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('copy', 'copy', [CompletionResultType]::ParameterValue, 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source''s key file.')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;db;copy' {
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'The target: postgres://user[:password]@host[:port]/dbname (an empty database)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;db;help' {
            [CompletionResult]::new('copy', 'copy', [CompletionResultType]::ParameterValue, 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source''s key file.')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;db;help;copy' {
            break
        }
        'authctl;db;help;help' {
            break
        }
        'authctl;verify' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;key' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'The keys of the key file (which one is current) and what still needs each')
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used')
            [CompletionResult]::new('rekey', 'rekey', [CompletionResultType]::ParameterValue, 'Finish or repeat a rotation''s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)')
            [CompletionResult]::new('retire', 'retire', [CompletionResultType]::ParameterValue, 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;key;list' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;key;rotate' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;key;rekey' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;key;retire' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;key;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'The keys of the key file (which one is current) and what still needs each')
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used')
            [CompletionResult]::new('rekey', 'rekey', [CompletionResultType]::ParameterValue, 'Finish or repeat a rotation''s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)')
            [CompletionResult]::new('retire', 'retire', [CompletionResultType]::ParameterValue, 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;key;help;list' {
            break
        }
        'authctl;key;help;rotate' {
            break
        }
        'authctl;key;help;rekey' {
            break
        }
        'authctl;key;help;retire' {
            break
        }
        'authctl;key;help;help' {
            break
        }
        'authctl;org' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create an organisation')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List organisations')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an empty organisation')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;org;add' {
            [CompletionResult]::new('--mfa-method', '--mfa-method', [CompletionResultType]::ParameterName, 'The second factor its users get by default')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;org;list' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;org;delete' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;org;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create an organisation')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List organisations')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an empty organisation')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;org;help;add' {
            break
        }
        'authctl;org;help;list' {
            break
        }
        'authctl;org;help;delete' {
            break
        }
        'authctl;org;help;help' {
            break
        }
        'authctl;group' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create a group')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change whether a group requires a second factor (and a passkey)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List groups')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;group;add' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--require-2fa', '--require-2fa', [CompletionResultType]::ParameterName, 'Members must use a second factor before they get a session')
            [CompletionResult]::new('--require-passkey', '--require-passkey', [CompletionResultType]::ParameterName, 'Members must use a passkey as their second factor (TOTP and emailed codes refused) when the policy says so: `policy set mfa.passkey_required=groups`')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;group;set' {
            [CompletionResult]::new('--require-2fa', '--require-2fa', [CompletionResultType]::ParameterName, 'require-2fa')
            [CompletionResult]::new('--require-passkey', '--require-passkey', [CompletionResultType]::ParameterName, 'Whether members must use a passkey (with mfa.passkey_required=groups)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;group;list' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;group;delete' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;group;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create a group')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change whether a group requires a second factor (and a passkey)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List groups')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;group;help;add' {
            break
        }
        'authctl;group;help;set' {
            break
        }
        'authctl;group;help;list' {
            break
        }
        'authctl;group;help;delete' {
            break
        }
        'authctl;group;help;help' {
            break
        }
        'authctl;policy' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show every setting, its value and default')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9')
            [CompletionResult]::new('preset', 'preset', [CompletionResultType]::ParameterValue, 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;policy;show' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;policy;set' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;policy;preset' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--show', '--show', [CompletionResultType]::ParameterName, 'Print each setting, its current and its preset value and why; change nothing')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;policy;help' {
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show every setting, its value and default')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9')
            [CompletionResult]::new('preset', 'preset', [CompletionResultType]::ParameterValue, 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;policy;help;show' {
            break
        }
        'authctl;policy;help;set' {
            break
        }
        'authctl;policy;help;preset' {
            break
        }
        'authctl;policy;help;help' {
            break
        }
        'authctl;session' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List live sessions')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'End one session by id, or every session of a user')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;session;list' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s sessions')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;session;revoke' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'End every session of this user')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;session;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List live sessions')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'End one session by id, or every session of a user')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;session;help;list' {
            break
        }
        'authctl;session;help;revoke' {
            break
        }
        'authctl;session;help;help' {
            break
        }
        'authctl;terms' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Publish a new version; users accept it at their next login (see the terms.mode policy)')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the current version')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;terms;set' {
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'The version name, e.g. 2026-11 (unique; a published version never changes)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'A UTF-8 text file with the terms, at most 256 KiB (''-'' for standard input)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'authctl;terms;show' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;terms;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Publish a new version; users accept it at their next login (see the terms.mode policy)')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the current version')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;terms;help;set' {
            break
        }
        'authctl;terms;help;show' {
            break
        }
        'authctl;terms;help;help' {
            break
        }
        'authctl;questions' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the list in force (the admin''s, or the built-in default)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;questions;set' {
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'A UTF-8 text file, one question per line (''-'' for standard input)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;questions;show' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;questions;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the list in force (the admin''s, or the built-in default)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;questions;help;set' {
            break
        }
        'authctl;questions;help;show' {
            break
        }
        'authctl;questions;help;help' {
            break
        }
        'authctl;import' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'The file format [default: from the extension, .csv or else jsonl]')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Check every line and report, but create nothing')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List clients')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one client (by name or client_id)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a client and every code, token and consent issued to it')
            [CompletionResult]::new('rotate-secret', 'rotate-secret', [CompletionResultType]::ParameterValue, 'Give a confidential client a new secret (printed once); the old one stops working')
            [CompletionResult]::new('rotate-keys', 'rotate-keys', [CompletionResultType]::ParameterValue, 'Make new signing keys; the old ones stay in the JWKS until their tokens expire')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;client;add' {
            [CompletionResult]::new('--redirect-uri', '--redirect-uri', [CompletionResultType]::ParameterName, 'Where authd may send the browser back with a code (repeatable). Matched exactly, byte for byte: register every URI the application uses')
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'Only members of this group may sign in to the client (repeatable: any of them)')
            [CompletionResult]::new('--id-token-alg', '--id-token-alg', [CompletionResultType]::ParameterName, 'How its ID tokens are signed: RS256 (what every client reads), EdDSA (Ed25519) or ES256 (ECDSA on P-256). Access tokens stay RS256 (only authd reads them)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--public', '--public', [CompletionResultType]::ParameterName, 'No secret (a single-page or native app): the client must use PKCE (S256)')
            [CompletionResult]::new('--trusted', '--trusted', [CompletionResultType]::ParameterName, 'Skip the consent page (an application of this site)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client;list' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client;show' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client;remove' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client;rotate-secret' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client;rotate-keys' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;client;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List clients')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one client (by name or client_id)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a client and every code, token and consent issued to it')
            [CompletionResult]::new('rotate-secret', 'rotate-secret', [CompletionResultType]::ParameterValue, 'Give a confidential client a new secret (printed once); the old one stops working')
            [CompletionResult]::new('rotate-keys', 'rotate-keys', [CompletionResultType]::ParameterValue, 'Make new signing keys; the old ones stay in the JWKS until their tokens expire')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;client;help;add' {
            break
        }
        'authctl;client;help;list' {
            break
        }
        'authctl;client;help;show' {
            break
        }
        'authctl;client;help;remove' {
            break
        }
        'authctl;client;help;rotate-secret' {
            break
        }
        'authctl;client;help;rotate-keys' {
            break
        }
        'authctl;client;help;help' {
            break
        }
        'authctl;generate' {
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Shell completions (to standard output, or a file in --out-dir)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Man pages for authctl and each subcommand')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;generate;completions' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'out-dir')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;generate;man' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'out-dir')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'The database file')
            [CompletionResult]::new('--key-file', '--key-file', [CompletionResultType]::ParameterName, 'The secret-encryption key file [default: DB.key]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine output: one JSON document (JSON lines for streams); errors as {"error","message"}')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed for destructive commands without a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'authctl;generate;help' {
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Shell completions (to standard output, or a file in --out-dir)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Man pages for authctl and each subcommand')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;generate;help;completions' {
            break
        }
        'authctl;generate;help;man' {
            break
        }
        'authctl;generate;help;help' {
            break
        }
        'authctl;help' {
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create the database and its secret-encryption key file (refuses to overwrite)')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Add, list, show, change, disable, enable and delete users')
            [CompletionResult]::new('passwd', 'passwd', [CompletionResultType]::ParameterValue, 'Set a user''s password (asked twice on a terminal) or force a change at next login')
            [CompletionResult]::new('enroll', 'enroll', [CompletionResultType]::ParameterValue, 'Enrol a second factor: prints the QR code, otpauth URI, secret and recovery codes')
            [CompletionResult]::new('totp', 'totp', [CompletionResultType]::ParameterValue, 'Diagnose authenticator codes')
            [CompletionResult]::new('reset-2fa', 'reset-2fa', [CompletionResultType]::ParameterValue, 'Remove every authenticator app, passkeys, recovery codes and remembered devices; the user enrols again')
            [CompletionResult]::new('unlock', 'unlock', [CompletionResultType]::ParameterValue, 'Clear a user''s lockout and failure count')
            [CompletionResult]::new('device', 'device', [CompletionResultType]::ParameterValue, 'List and revoke remembered devices')
            [CompletionResult]::new('passkey', 'passkey', [CompletionResultType]::ParameterValue, 'List and remove a user''s passkeys (WebAuthn credentials they registered)')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Query the audit log; `audit verify|prune|export` check, cut and ship it')
            [CompletionResult]::new('backup', 'backup', [CompletionResultType]::ParameterValue, 'A consistent copy of the database into FILE while authd serves (never over an existing file). The key file is not in it: keep a copy of the key separately')
            [CompletionResult]::new('db', 'db', [CompletionResultType]::ParameterValue, 'Move the database to another engine: `db copy --to postgres://…` copies this SQLite database (--db) into an empty PostgreSQL database, for running several nodes')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check the database: integrity, schema version, that the key opens every secret, the audit chain. Exits 1 naming what is wrong')
            [CompletionResult]::new('key', 'key', [CompletionResultType]::ParameterValue, 'The key file''s keys: list them, rotate to a new one, retire an old one')
            [CompletionResult]::new('org', 'org', [CompletionResultType]::ParameterValue, 'Organisations (tenants)')
            [CompletionResult]::new('group', 'group', [CompletionResultType]::ParameterValue, 'Groups and whether they require two-factor authentication')
            [CompletionResult]::new('policy', 'policy', [CompletionResultType]::ParameterValue, 'Show and change policy settings (lockout, password rules, expiry, 2FA, sessions…)')
            [CompletionResult]::new('session', 'session', [CompletionResultType]::ParameterValue, 'List and revoke login sessions')
            [CompletionResult]::new('terms', 'terms', [CompletionResultType]::ParameterValue, 'Publish the terms and conditions users must accept')
            [CompletionResult]::new('questions', 'questions', [CompletionResultType]::ParameterValue, 'The list of security questions users pick from (unknown names are shown questions of the same list, so the questions reveal nobody)')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Create many users from a JSON-lines or CSV file')
            [CompletionResult]::new('client', 'client', [CompletionResultType]::ParameterValue, 'OpenID Connect clients (relying parties) and the provider''s signing keys')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Generate shell completions and man pages')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'authctl;help;init' {
            break
        }
        'authctl;help;user' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create a user')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one user')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change a user''s email, organisation, role or groups')
            [CompletionResult]::new('disable', 'disable', [CompletionResultType]::ParameterValue, 'Disable a user: no login; sessions and remembered devices end')
            [CompletionResult]::new('enable', 'enable', [CompletionResultType]::ParameterValue, 'Enable a disabled user')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a user and everything attached (asks for confirmation; --yes to skip)')
            [CompletionResult]::new('reset-link', 'reset-link', [CompletionResultType]::ParameterValue, 'Print a one-time link (and its QR code) with which the user sets a new password')
            break
        }
        'authctl;help;user;add' {
            break
        }
        'authctl;help;user;list' {
            break
        }
        'authctl;help;user;show' {
            break
        }
        'authctl;help;user;set' {
            break
        }
        'authctl;help;user;disable' {
            break
        }
        'authctl;help;user;enable' {
            break
        }
        'authctl;help;user;delete' {
            break
        }
        'authctl;help;user;reset-link' {
            break
        }
        'authctl;help;passwd' {
            break
        }
        'authctl;help;enroll' {
            break
        }
        'authctl;help;totp' {
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Check whether CODE matches one of the user''s authenticator apps now: which app, and at which step offset (clock-drift diagnosis). Consumes nothing. Exit 0 on a match, 1 otherwise')
            break
        }
        'authctl;help;totp;test' {
            break
        }
        'authctl;help;reset-2fa' {
            break
        }
        'authctl;help;unlock' {
            break
        }
        'authctl;help;device' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List live remembered devices')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke one device by id, or all of a user''s devices')
            break
        }
        'authctl;help;device;list' {
            break
        }
        'authctl;help;device;revoke' {
            break
        }
        'authctl;help;passkey' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List a user''s passkeys: id, name, authenticator model (AAGUID), created, last used, signature counter, backed up, user verified')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove one passkey of a user (a lost or stolen authenticator); the other factors stay. `reset-2fa` removes them all')
            break
        }
        'authctl;help;passkey;list' {
            break
        }
        'authctl;help;passkey;remove' {
            break
        }
        'authctl;help;audit' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check every row''s MAC under the key: exits 1 naming the first row that was edited, deleted, inserted or moved')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Delete the rows written before T (RFC 3339, a date, or a duration back: 400d), keeping the chain verifiable from a signed anchor at the cut')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Print rows as JSON lines with their MACs, oldest first, for log shipping')
            break
        }
        'authctl;help;audit;verify' {
            break
        }
        'authctl;help;audit;prune' {
            break
        }
        'authctl;help;audit;export' {
            break
        }
        'authctl;help;backup' {
            break
        }
        'authctl;help;db' {
            [CompletionResult]::new('copy', 'copy', [CompletionResultType]::ParameterValue, 'Copy everything (users, hashes, encrypted secrets, factors, devices, sessions, policy, terms, questions, OpenID Connect, the audit log and its chain) with every id kept into an EMPTY PostgreSQL database, in one transaction, from a consistent snapshot (authd may keep serving from the SQLite file meanwhile). A target with no schema gets it; one holding any row is refused (exit 4) and left unchanged. Row counts are compared table by table and printed. The key file stays the same file: start authd on the copy with `--db URL --key-file` the source''s key file.')
            break
        }
        'authctl;help;db;copy' {
            break
        }
        'authctl;help;verify' {
            break
        }
        'authctl;help;key' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'The keys of the key file (which one is current) and what still needs each')
            [CompletionResult]::new('rotate', 'rotate', [CompletionResultType]::ParameterValue, 'Add a new key to the key file and make it current, then encrypt the TOTP secrets and seal the audit log again under it, in short batches while authd serves (a running authd reads the changed key file within a second). Recovery and emailed codes issued before stay valid under their old key until used')
            [CompletionResult]::new('rekey', 'rekey', [CompletionResultType]::ParameterValue, 'Finish or repeat a rotation''s re-encryption (after an interruption, or rows a running authd sealed under the old key before it noticed the new one)')
            [CompletionResult]::new('retire', 'retire', [CompletionResultType]::ParameterValue, 'Remove key ID from the key file. Refused for the current key, and while anything stored still needs it (each kind of value named with a count)')
            break
        }
        'authctl;help;key;list' {
            break
        }
        'authctl;help;key;rotate' {
            break
        }
        'authctl;help;key;rekey' {
            break
        }
        'authctl;help;key;retire' {
            break
        }
        'authctl;help;org' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create an organisation')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List organisations')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an empty organisation')
            break
        }
        'authctl;help;org;add' {
            break
        }
        'authctl;help;org;list' {
            break
        }
        'authctl;help;org;delete' {
            break
        }
        'authctl;help;group' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create a group')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change whether a group requires a second factor (and a passkey)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List groups')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a group (members leave it). When the group requires a second factor and has members, asks for confirmation (--yes to skip)')
            break
        }
        'authctl;help;group;add' {
            break
        }
        'authctl;help;group;set' {
            break
        }
        'authctl;help;group;list' {
            break
        }
        'authctl;help;group;delete' {
            break
        }
        'authctl;help;policy' {
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show every setting, its value and default')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Change settings: KEY=VALUE… (all or nothing), e.g. lockout.max_failures=9')
            [CompletionResult]::new('preset', 'preset', [CompletionResultType]::ParameterValue, 'Apply a named set of settings: `seed` (the rules authd was first built to: character classes, 8+, 9 failures lock the account) or `nist-800-63b` (15+ characters, no composition rules or expiry, common passwords refused, smart lockout). Asks first (--yes for scripts); --show prints what would change and changes nothing')
            break
        }
        'authctl;help;policy;show' {
            break
        }
        'authctl;help;policy;set' {
            break
        }
        'authctl;help;policy;preset' {
            break
        }
        'authctl;help;session' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List live sessions')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'End one session by id, or every session of a user')
            break
        }
        'authctl;help;session;list' {
            break
        }
        'authctl;help;session;revoke' {
            break
        }
        'authctl;help;terms' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Publish a new version; users accept it at their next login (see the terms.mode policy)')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the current version')
            break
        }
        'authctl;help;terms;set' {
            break
        }
        'authctl;help;terms;show' {
            break
        }
        'authctl;help;questions' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Replace the list: one question per line (5 to 100; blank lines skipped). From now on users pick their questions from it')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the list in force (the admin''s, or the built-in default)')
            break
        }
        'authctl;help;questions;set' {
            break
        }
        'authctl;help;questions;show' {
            break
        }
        'authctl;help;import' {
            break
        }
        'authctl;help;client' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Register an OpenID Connect client. Prints its client_id and, for a confidential client, its secret: shown once, stored hashed (`--json` gives {"client_id","client_secret"})')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List clients')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one client (by name or client_id)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a client and every code, token and consent issued to it')
            [CompletionResult]::new('rotate-secret', 'rotate-secret', [CompletionResultType]::ParameterValue, 'Give a confidential client a new secret (printed once); the old one stops working')
            [CompletionResult]::new('rotate-keys', 'rotate-keys', [CompletionResultType]::ParameterValue, 'Make new signing keys; the old ones stay in the JWKS until their tokens expire')
            break
        }
        'authctl;help;client;add' {
            break
        }
        'authctl;help;client;list' {
            break
        }
        'authctl;help;client;show' {
            break
        }
        'authctl;help;client;remove' {
            break
        }
        'authctl;help;client;rotate-secret' {
            break
        }
        'authctl;help;client;rotate-keys' {
            break
        }
        'authctl;help;generate' {
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Shell completions (to standard output, or a file in --out-dir)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Man pages for authctl and each subcommand')
            break
        }
        'authctl;help;generate;completions' {
            break
        }
        'authctl;help;generate;man' {
            break
        }
        'authctl;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
