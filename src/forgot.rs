//! Forgotten passwords, through security questions.
//!
//! A signed-in user sets 2 to 5 questions with answers. Answers are normalised (NFKC,
//! trimmed, case-folded, inner spaces collapsed) and hashed with argon2id, like passwords.
//!
//! `forgot` answers every username with the same shape: a flow token and the questions.
//! For a name that does not exist (or has no questions) the questions are plausible ones
//! picked deterministically from the name under the server key, and the token leads
//! nowhere, so the answer does not reveal who exists. `reset` checks all answers (every
//! answer is verified, no short cut); any wrong answer counts toward the lockout. A reset
//! sets the password and nothing else: it never logs the user in, and the next login
//! still asks for the second factor.

use crate::sql::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::json;
use unicode_normalization::UnicodeNormalization;

use crate::audit::{self, Entry, Outcome};
use crate::crypto::{self, SecretKey};
use crate::db;
use crate::error::{Error, Result};
use crate::kinds::{AuditEvent, LoginStep};
use crate::lockout;
use crate::login::{check_new_password, Client, Decision, Status};
use crate::password::{self, Hashing};
use crate::policy::Policy;
use crate::store::{familiar, sessions, users};

pub const MIN_QUESTIONS: usize = 2;
pub const MAX_QUESTIONS: usize = 5;
const STEP: LoginStep = LoginStep::Forgot;
const MAX_QUESTION_CHARS: usize = 200;
const MAX_ANSWER_CHARS: usize = 200;

/// Questions shown for names that have none, so every answer has the same shape.
const DECOYS: &[&str] = &[
    "What was the name of your first pet?",
    "In which city were you born?",
    "What was the name of your primary school?",
    "What is your mother's maiden name?",
    "What was the make of your first car?",
    "What is the name of the street you grew up on?",
    "What was your childhood nickname?",
    "Who was your favourite teacher?",
    "What is your favourite book?",
    "In which town did your parents meet?",
];

/// Where the admin's list of questions lives (`meta`, a JSON array), set with `authctl
/// questions set`. Without it the built-in list ([`DECOYS`]) is offered and users may
/// still write their own questions (the seed's behaviour).
const LIST_KEY: &str = "security_questions.list";
/// Bounds of an admin's list.
pub const MIN_LIST: usize = MAX_QUESTIONS;
pub const MAX_LIST: usize = 100;

/// The questions users pick from, and whether an admin set them (else the defaults).
pub fn question_list(conn: &Connection) -> Result<(Vec<String>, bool)> {
    let stored: Option<String> = crate::store::opt(conn.query_row(
        "SELECT value FROM meta WHERE key=?1",
        [LIST_KEY],
        |r| r.get(0),
    ))?;
    if let Some(text) = stored {
        let list: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("the stored question list is unreadable: {e}")))?;
        return Ok((list, true));
    }
    Ok((DECOYS.iter().map(|q| q.to_string()).collect(), false))
}

/// Check and store the admin's list (replacing the previous one); the stored list.
pub fn set_question_list(conn: &Connection, list: &[String]) -> Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, q) in list.iter().enumerate() {
        let q: String = q.trim().nfkc().collect();
        if q.is_empty() {
            continue;
        }
        let n = i + 1;
        if q.chars().count() < 5 || q.chars().count() > MAX_QUESTION_CHARS {
            return Err(Error::Invalid(format!(
                "question {n} must be 5 to {MAX_QUESTION_CHARS} characters"
            )));
        }
        if q.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "question {n} contains control characters"
            )));
        }
        if !seen.insert(normalize_answer(&q)) {
            return Err(Error::Invalid(format!(
                "question {n} repeats an earlier question"
            )));
        }
        out.push(q);
    }
    if !(MIN_LIST..=MAX_LIST).contains(&out.len()) {
        return Err(Error::Invalid(format!(
            "give {MIN_LIST} to {MAX_LIST} questions (one per line), not {}",
            out.len()
        )));
    }
    let text = serde_json::to_string(&out).map_err(|e| Error::Invalid(e.to_string()))?;
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        params![LIST_KEY, text],
    )?;
    Ok(out)
}

/// Under an admin's list, every question must be one of it (compared normalised).
pub fn check_offered(conn: &Connection, qs: &[QuestionAnswer]) -> Result<()> {
    let (list, admin) = question_list(conn)?;
    if !admin {
        return Ok(());
    }
    let offered: std::collections::HashSet<String> =
        list.iter().map(|q| normalize_answer(q)).collect();
    for (i, q) in qs.iter().enumerate() {
        if !offered.contains(&normalize_answer(&q.question)) {
            return Err(Error::Invalid(format!(
                "question {} is not one of the questions offered here: pick from the list (GET /v1/me/security-questions shows it as \"offered\")",
                i + 1
            )));
        }
    }
    Ok(())
}

/// How many users have how many questions: (count, users), by count.
fn count_histogram(conn: &Connection) -> Result<Vec<(usize, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT n, count(*) FROM (SELECT count(*) AS n FROM security_questions GROUP BY user_id)
         GROUP BY n ORDER BY n",
    )?;
    let rows = stmt
        .query_map((), |r| Ok((r.get::<i64>(0)? as usize, r.get(1)?)))?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Decoys for a name under an admin's list: questions of that list, as many as a real
/// user has — the count drawn from how many users have how many — stable per name under
/// this server's key (while the list and the counts stay as they are).
pub fn decoys_from(
    key: &SecretKey,
    username: &str,
    list: &[String],
    histogram: &[(usize, i64)],
) -> Vec<String> {
    let h = key.keyed_hash(
        "decoy questions from list",
        crate::names::key_of(username).as_bytes(),
    );
    let bytes = data_encoding::HEXLOWER
        .decode(h.as_bytes())
        .unwrap_or_default();
    let total: i64 = histogram.iter().map(|(_, n)| n).sum();
    let pick = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    let count = if total > 0 {
        let mut at = (pick % total as u64) as i64;
        let mut c = MIN_QUESTIONS;
        for (n, users) in histogram {
            if at < *users {
                c = *n;
                break;
            }
            at -= users;
        }
        c
    } else {
        MIN_QUESTIONS + (pick as usize % (MAX_QUESTIONS - MIN_QUESTIONS + 1))
    }
    .min(list.len());
    // A keyed shuffle of the list's indices; the first `count` are the questions.
    let mut idx: Vec<usize> = (0..list.len()).collect();
    for i in (1..idx.len()).rev() {
        let b = bytes.get(8 + (i % 24)).copied().unwrap_or(0) as usize;
        let j = (b + i * 7 + (pick as usize >> (i % 32))) % (i + 1);
        idx.swap(i, j);
    }
    idx.into_iter()
        .take(count)
        .map(|i| list[i].clone())
        .collect()
}

/// Trim, case-fold, collapse inner whitespace: "  Fluffy   the Cat " == "fluffy the cat".
pub fn normalize_answer(a: &str) -> String {
    let nfkc: String = a.nfkc().collect();
    nfkc.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionAnswer {
    pub question: String,
    pub answer: String,
}

/// Validate and hash a set of questions (slow: argon2 per answer). Call outside
/// transactions; store the result with [`store_questions`].
pub fn prepare_questions(
    hashing: &Hashing,
    qs: &[QuestionAnswer],
    policy: &Policy,
) -> Result<Vec<(String, String)>> {
    if !(MIN_QUESTIONS..=MAX_QUESTIONS).contains(&qs.len()) {
        return Err(Error::Invalid(format!(
            "give {MIN_QUESTIONS} to {MAX_QUESTIONS} security questions, not {}",
            qs.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(qs.len());
    for (i, q) in qs.iter().enumerate() {
        let question: String = q.question.trim().nfkc().collect();
        let n = i + 1;
        if question.chars().count() < 5 || question.chars().count() > MAX_QUESTION_CHARS {
            return Err(Error::Invalid(format!(
                "question {n} must be 5 to {MAX_QUESTION_CHARS} characters"
            )));
        }
        if question.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "question {n} contains control characters"
            )));
        }
        if !seen.insert(normalize_answer(&question)) {
            return Err(Error::Invalid(format!(
                "question {n} repeats an earlier question"
            )));
        }
        let answer = normalize_answer(&q.answer);
        if answer.chars().count() < 2 || answer.chars().count() > MAX_ANSWER_CHARS {
            return Err(Error::Invalid(format!(
                "answer {n} must be 2 to {MAX_ANSWER_CHARS} characters"
            )));
        }
        if answer.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "answer {n} contains control characters"
            )));
        }
        let hash =
            password::hash_password(hashing, &answer, policy.argon2).map_err(Error::Invalid)?;
        out.push((question, hash));
    }
    Ok(out)
}

/// Replace a user's questions (audited, in one transaction).
pub fn store_questions(
    conn: &mut Connection,
    client: &Client,
    user_id: i64,
    prepared: &[(String, String)],
    now: i64,
) -> Result<()> {
    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, user_id)?;
    tx.execute("DELETE FROM security_questions WHERE user_id=?1", [user_id])?;
    for (i, (q, h)) in prepared.iter().enumerate() {
        tx.execute(
            "INSERT INTO security_questions(user_id, position, question, answer_hash) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, i as i64, q, h],
        )?;
    }
    audit::record(
        &tx,
        &Entry::new(AuditEvent::SecurityQuestionsSet, Outcome::Success)
            .client(&client.ip, &client.user_agent)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"count": prepared.len()})),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

/// The user's questions, in order (no answers).
pub fn questions(conn: &Connection, user_id: i64) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT question FROM security_questions WHERE user_id=?1 ORDER BY position")?;
    let rows = stmt
        .query_map([user_id], |r| r.get(0))?
        .collect::<crate::sql::Result<Vec<String>>>()?;
    Ok(rows)
}

fn answer_hashes(conn: &Connection, user_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT answer_hash FROM security_questions WHERE user_id=?1 ORDER BY position")?;
    let rows = stmt
        .query_map([user_id], |r| r.get(0))?
        .collect::<crate::sql::Result<Vec<String>>>()?;
    Ok(rows)
}

/// Decoy questions for a name: stable for that name under this server's key.
pub fn decoy_questions(key: &SecretKey, username: &str) -> Vec<String> {
    let h = key.stable_hash("decoy questions", crate::names::key_of(username).as_bytes());
    let bytes = data_encoding::HEXLOWER
        .decode(h.as_bytes())
        .unwrap_or_default();
    // Any count a real user may have, so the number of questions proves nothing.
    let count = MIN_QUESTIONS
        + (bytes.first().copied().unwrap_or(0) as usize % (MAX_QUESTIONS - MIN_QUESTIONS + 1));
    let mut picked: Vec<String> = Vec::new();
    for b in bytes.iter().skip(1) {
        let q = DECOYS[*b as usize % DECOYS.len()];
        if !picked.iter().any(|p| p == q) {
            picked.push(q.to_string());
        }
        if picked.len() == count {
            break;
        }
    }
    picked
}

/// What `POST /v1/password/forgot` answers (the same shape for every name).
#[derive(Debug, Clone, Serialize)]
pub struct Forgot {
    pub flow: String,
    pub questions: Vec<String>,
}

/// What `POST /v1/password/forgot` answers: the questions, or (under `password.recovery
/// = link`) that a link was mailed. Either is the same for every name.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Questions(Forgot),
    Link(crate::reset_link::LinkSent),
}

/// Start a reset the way the policy says: questions, or a link by mail.
pub fn start(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    username: &str,
    now: i64,
) -> Result<Decision<Answer>> {
    let policy = Policy::load(conn)?;
    Ok(match policy.password_recovery {
        crate::policy::Recovery::Link => {
            let d = crate::reset_link::request(conn, key, client, username, now)?;
            Decision {
                result: d.result.map(Answer::Link),
                reason: d.reason,
                locked_now: d.locked_now,
                mail: d.mail,
            }
        }
        crate::policy::Recovery::Questions => {
            let d = forgot(conn, key, client, username, now)?;
            Decision {
                result: d.result.map(Answer::Questions),
                reason: d.reason,
                locked_now: d.locked_now,
                mail: d.mail,
            }
        }
    })
}

/// Start a reset: the user's questions and a flow token, or decoys of the same shape.
pub fn forgot(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    username: &str,
    now: i64,
) -> Result<Decision<Forgot>> {
    let policy = Policy::load(conn)?;
    if policy.password_recovery == crate::policy::Recovery::Link {
        // No questions under this policy: nobody's are shown or checked.
        return Ok(Decision::refused(
            Error::Invalid("forgotten passwords are reset by an emailed link here".into()),
            "questions_off",
        ));
    }
    let typed: String = username.chars().take(256).collect();
    let tx = db::write_tx(conn)?;
    let user = users::find(&tx, &typed)?;
    let qs = match &user {
        Some(u) => questions(&tx, u.id)?,
        None => Vec::new(),
    };
    let base = Entry::new(AuditEvent::PasswordForgot, Outcome::Failure)
        .client(&client.ip, &client.user_agent)
        .username(&typed);
    let (result, reason) = match user {
        Some(u) if qs.len() >= MIN_QUESTIONS => {
            let flow = sessions::create_flow(&tx, u.id, STEP, "{}", policy.flow_ttl_seconds, now)?;
            audit::record(
                &tx,
                &Entry::new(AuditEvent::PasswordForgot, Outcome::Success)
                    .client(&client.ip, &client.user_agent)
                    .username(&typed)
                    .user(u.id, u.org_id),
                now,
            )?;
            (
                Forgot {
                    flow,
                    questions: qs,
                },
                "ok",
            )
        }
        other => {
            let reason = if other.is_some() {
                "no_questions"
            } else {
                "unknown_user"
            };
            let mut e = base.reason(reason);
            if let Some(u) = &other {
                e = e.user(u.id, u.org_id);
            }
            audit::record(&tx, &e, now)?;
            let (list, admin) = question_list(&tx)?;
            let questions = if admin {
                decoys_from(key, &typed, &list, &count_histogram(&tx)?)
            } else {
                decoy_questions(key, &typed)
            };
            (
                Forgot {
                    flow: crypto::random_token(),
                    questions,
                },
                reason,
            )
        }
    };
    tx.commit()?;
    // The caller is always told the same: here are the questions.
    Ok(Decision {
        reason,
        ..Decision::ok(result)
    })
}

/// Finish a reset: every answer right sets the new password (typed twice, policy checked).
/// Slow (argon2 per answer). Wrong answers count toward the lockout; the flow survives
/// them for another try until the account locks.
// The core's hashing slots, the connection and the step's own inputs.
#[allow(clippy::too_many_arguments)]
pub fn reset(
    hashing: &Hashing,
    conn: &mut Connection,
    client: &Client,
    flow_token: &str,
    answers: &[String],
    new_password: &str,
    confirm_password: &str,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    if policy.password_recovery == crate::policy::Recovery::Link {
        return Ok(Decision::refused(
            Error::Invalid("forgotten passwords are reset by an emailed link here".into()),
            "questions_off",
        ));
    }
    // Shape first: it does not depend on who the user is or on the answers.
    check_new_password(
        hashing,
        &policy.password,
        new_password,
        confirm_password,
        None,
    )?;
    if answers.is_empty() || answers.len() > MAX_QUESTIONS {
        return Err(Error::Invalid(format!(
            "give one answer per question ({MIN_QUESTIONS} to {MAX_QUESTIONS})"
        )));
    }
    let peek = if flow_token.is_empty() || flow_token.len() > 128 {
        None
    } else {
        sessions::find_flow(conn, flow_token, STEP, now)?
    };
    let Some(peek) = peek else {
        // Decoy flows land here too: the same generic refusal as wrong answers.
        for a in answers {
            password::dummy_verify(hashing, &normalize_answer(a), policy.argon2);
        }
        let tx = db::write_tx(conn)?;
        audit::record(
            &tx,
            &Entry::new(AuditEvent::PasswordReset, Outcome::Failure)
                .client(&client.ip, &client.user_agent)
                .reason("invalid_flow"),
            now,
        )?;
        tx.commit()?;
        return Ok(Decision::refused(Error::InvalidCredentials, "invalid_flow"));
    };
    let hashes = answer_hashes(conn, peek.user_id)?;
    let mut all_right = hashes.len() == answers.len();
    for (i, a) in answers.iter().enumerate() {
        let normalized = normalize_answer(a);
        let ok = match hashes.get(i) {
            Some(h) => password::verify_password(hashing, &normalized, h),
            None => password::dummy_verify(hashing, &normalized, policy.argon2),
        };
        all_right &= ok;
    }
    let current = users::by_id(conn, peek.user_id)?;
    let new_hash = if all_right {
        if current
            .password_hash
            .as_deref()
            .is_some_and(|h| password::verify_password(hashing, new_password, h))
        {
            return Err(Error::Policy {
                message: "the new password must differ from the current one".into(),
                rules: policy.password.check(new_password),
            });
        }
        Some(
            password::hash_password(hashing, new_password, policy.argon2)
                .map_err(Error::Invalid)?,
        )
    } else {
        None
    };

    let tx = db::write_tx(conn)?;
    let Some(flow) = sessions::find_flow(&tx, flow_token, STEP, now)? else {
        audit::record(
            &tx,
            &Entry::new(AuditEvent::PasswordReset, Outcome::Failure)
                .client(&client.ip, &client.user_agent)
                .reason("invalid_flow"),
            now,
        )?;
        tx.commit()?;
        return Ok(Decision::refused(Error::InvalidCredentials, "invalid_flow"));
    };
    let user = users::by_id(&tx, flow.user_id)?;
    let base = Entry::new(AuditEvent::PasswordReset, Outcome::Failure)
        .client(&client.ip, &client.user_agent)
        .username(&user.username)
        .user(user.id, user.org_id);
    // Security answers count toward the lockout as their source's (no device token here).
    let lock = policy.lockout();
    let source = familiar::source_of(&tx, user.id, &client.ip, None, lock.familiar_days, now)?;
    let refusal = if user.disabled {
        Some("disabled")
    } else {
        user.lock_state().refusal(lock.mode, source, now)
    };
    if let Some(reason) = refusal {
        sessions::consume_flow(&tx, flow.id, now)?;
        audit::record(&tx, &base.reason(reason).detail(source.detail()), now)?;
        tx.commit()?;
        return Ok(Decision::refused(Error::InvalidCredentials, "locked"));
    }
    let Some(hash) = new_hash else {
        let o = users::record_failure_from(&tx, user.id, &lock, source, now)?;
        audit::record(
            &tx,
            &base.reason("wrong_answers").detail(source.detail()),
            now,
        )?;
        let lock_reason = match o.lock {
            lockout::Lock::None => None,
            lockout::Lock::Account => Some(("too_many_failures", "account")),
            lockout::Lock::Unfamiliar => {
                Some(("too_many_unfamiliar_failures", "unfamiliar_sources"))
            }
        };
        if let Some((reason, scope)) = lock_reason {
            audit::record(
                &tx,
                &Entry::new(AuditEvent::AccountLocked, Outcome::Success)
                    .client(&client.ip, &client.user_agent)
                    .username(&user.username)
                    .user(user.id, user.org_id)
                    .reason(reason)
                    .detail(json!({"failed_attempts": lock.max_failures, "scope": scope})),
                now,
            )?;
        }
        tx.commit()?;
        let mut d = Decision::refused(Error::InvalidCredentials, "wrong_answers");
        d.locked_now = lock_reason.is_some();
        return Ok(d);
    };
    sessions::consume_flow(&tx, flow.id, now)?;
    users::set_password(&tx, user.id, &hash, false, now)?;
    audit::record(
        &tx,
        &Entry::new(AuditEvent::PasswordReset, Outcome::Success)
            .client(&client.ip, &client.user_agent)
            .username(&user.username)
            .user(user.id, user.org_id),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(Status::PasswordChanged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_normalise() {
        assert_eq!(normalize_answer("  Fluffy   the\tCAT "), "fluffy the cat");
        assert_eq!(normalize_answer("ＦＬＵＦＦＹ"), "fluffy");
    }

    #[test]
    fn decoys_are_stable_per_name_and_shaped_like_real_ones() {
        let k = SecretKey::from_bytes([1; 32]);
        let a = decoy_questions(&k, "nobody");
        assert_eq!(a, decoy_questions(&k, "NOBODY "));
        assert!((MIN_QUESTIONS..=MAX_QUESTIONS).contains(&a.len()));
        let counts: std::collections::HashSet<_> = (0..200)
            .map(|i| decoy_questions(&k, &format!("n{i}")).len())
            .collect();
        assert_eq!(
            counts.len(),
            MAX_QUESTIONS - MIN_QUESTIONS + 1,
            "every count a user may set"
        );
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), a.len());
        // Different names get different sets (overwhelmingly).
        let many: std::collections::HashSet<_> = (0..50)
            .map(|i| decoy_questions(&k, &format!("u{i}")))
            .collect();
        assert!(many.len() > 10);
    }
}
