//! Terminal prompts, only ever on a TTY: without one, a missing answer is an error.

use std::io::{BufRead, IsTerminal};

use anyhow::Result;
use authcore::password::PasswordPolicy;
use zeroize::Zeroizing;

use crate::args::PasswordSource;
use crate::output::Refused;

pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask yes/no on a terminal; without one, only `--yes` says yes.
pub fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !stdin_is_tty() {
        return Err(Refused::err(
            "confirmation_required",
            1,
            format!("{question} Refusing without a terminal to confirm; pass --yes"),
        ));
    }
    let ok = dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?;
    if ok {
        Ok(())
    } else {
        Err(Refused::err(
            "cancelled",
            1,
            "cancelled; nothing was changed",
        ))
    }
}

/// A new password with how it was obtained.
pub struct NewPassword {
    pub password: Zeroizing<String>,
    pub generated: bool,
}

/// A strong password that meets `policy`: 20 characters from a CSPRNG, with each class.
pub fn generate_password(policy: &PasswordPolicy) -> Zeroizing<String> {
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGIT: &[u8] = b"23456789";
    const SPECIAL: &[u8] = b"!#%+-.:=?@_~";
    let pick = |set: &[u8]| set[authcore::crypto::random_below(set.len() as u32) as usize];
    let all: Vec<u8> = [LOWER, UPPER, DIGIT, SPECIAL].concat();
    let len = policy.min_length.max(20);
    loop {
        let mut p: Vec<u8> = vec![pick(LOWER), pick(UPPER), pick(DIGIT), pick(SPECIAL)];
        while p.len() < len {
            p.push(pick(&all));
        }
        // Fisher-Yates so the guaranteed classes are not always first.
        for i in (1..p.len()).rev() {
            let j = authcore::crypto::random_below(i as u32 + 1) as usize;
            p.swap(i, j);
        }
        let s = Zeroizing::new(String::from_utf8_lossy(&p).into_owned());
        if PasswordPolicy::is_ok(&policy.check(&s)) {
            return s;
        }
    }
}

/// Read one line of standard input (the password), without its line ending.
pub fn read_stdin_line() -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_string();
    if trimmed.is_empty() {
        return Err(Refused::err(
            "invalid_input",
            2,
            "no password on standard input",
        ));
    }
    Ok(Zeroizing::new(trimmed))
}

/// A new password from the chosen source; None when no source applies (no terminal and
/// neither --password-stdin nor --generate-password).
pub fn new_password(src: &PasswordSource, policy: &PasswordPolicy) -> Result<Option<NewPassword>> {
    if src.password_stdin {
        return Ok(Some(NewPassword {
            password: read_stdin_line()?,
            generated: false,
        }));
    }
    if src.generate_password {
        return Ok(Some(NewPassword {
            password: generate_password(policy),
            generated: true,
        }));
    }
    if !stdin_is_tty() {
        return Ok(None);
    }
    let first = Zeroizing::new(
        dialoguer::Password::new()
            .with_prompt("New password")
            .interact()?,
    );
    let checks = policy.check(&first);
    if !PasswordPolicy::is_ok(&checks) {
        return Err(weak(checks).into());
    }
    let second = Zeroizing::new(
        dialoguer::Password::new()
            .with_prompt("Repeat the password")
            .interact()?,
    );
    if !authcore::crypto::ct_eq(first.as_bytes(), second.as_bytes()) {
        return Err(Refused::err(
            "password_mismatch",
            5,
            "passwords do not match: type the same new password in both prompts",
        ));
    }
    Ok(Some(NewPassword {
        password: first,
        generated: false,
    }))
}

/// The policy error for a weak password, naming each unmet rule.
pub fn weak(checks: Vec<authcore::password::RuleResult>) -> authcore::Error {
    authcore::ops::weak_password(checks)
}
