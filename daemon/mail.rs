//! Mail: one-time codes and notices, over SMTP (lettre) or into a directory of .eml files.
//!
//! Codes are sent from memory right after the decision commits; the request waits for the
//! delivery (bounded: a few tries within a deadline) so a mail server that is down makes
//! the login fail closed with a clear error instead of hanging or pretending. Concurrent
//! deliveries are bounded; when all slots are busy for too long the send is refused.
//! Notices (locked, two-factor reset, password changed) go through the `outbox` table and
//! a background task with retries and back-off, so none is lost across restarts.

use std::path::Path;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::Semaphore;

/// Deliveries in flight at once; more wait for a slot.
const SLOTS: usize = 32;
/// How long a code delivery may wait for a slot.
const SLOT_WAIT: Duration = Duration::from_secs(2);
/// Tries per code delivery, and the whole deadline.
const TRIES: u32 = 3;
const DEADLINE: Duration = Duration::from_secs(15);
/// SMTP command timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbox: poll interval, batch size, tries before giving up on a notice.
pub const OUTBOX_POLL: Duration = Duration::from_secs(2);
pub const OUTBOX_BATCH: i64 = 20;
pub const OUTBOX_MAX_ATTEMPTS: i64 = 10;

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(AsyncFileTransport<Tokio1Executor>),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    slots: Semaphore,
    /// Where mail goes, for logs (never with credentials).
    pub describe: String,
}

impl Mailer {
    /// A mailer from the configuration: SMTP URL (smtp://, smtps://, `?tls=required` for
    /// STARTTLS; `user:password@` for credentials) or a directory; None when neither.
    pub fn from_config(
        smtp_url: Option<&str>,
        mail_dir: Option<&Path>,
        mail_from: Option<&str>,
    ) -> Result<Option<Mailer>, String> {
        let from: Mailbox = mail_from
            .unwrap_or("authd <authd@localhost>")
            .parse()
            .map_err(|e| format!("--mail-from is not a valid address: {e}"))?;
        let (transport, describe) = match (smtp_url, mail_dir) {
            (Some(_), Some(_)) => {
                return Err("give either --smtp-url or --mail-dir, not both".into())
            }
            (Some(url), None) => {
                let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| format!("--smtp-url is not a usable SMTP URL: {e}"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                let shown = url.split('@').next_back().unwrap_or(url);
                let scheme = url.split("://").next().unwrap_or("smtp");
                (
                    Transport::Smtp(t),
                    format!(
                        "{scheme}://{}",
                        shown.trim_start_matches(&format!("{scheme}://"))
                    ),
                )
            }
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create the mail directory {}: {e}", dir.display())
                })?;
                (
                    Transport::Dir(AsyncFileTransport::<Tokio1Executor>::new(dir)),
                    format!("directory {}", dir.display()),
                )
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Mailer {
            transport,
            from,
            slots: Semaphore::new(SLOTS),
            describe,
        }))
    }

    fn message(&self, to: &str, subject: &str, body: &str) -> Result<Message, String> {
        let to: Mailbox = to.parse().map_err(|e| format!("bad recipient: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| format!("cannot build the message: {e}"))
    }

    async fn send_once(&self, msg: &Message) -> Result<(), String> {
        match &self.transport {
            Transport::Smtp(t) => t
                .send(msg.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Transport::Dir(t) => t
                .send(msg.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Deliver now: a few tries within a deadline. Err means the message was not accepted.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let msg = self.message(to, subject, body)?;
        let _slot = tokio::time::timeout(SLOT_WAIT, self.slots.acquire())
            .await
            .map_err(|_| "the mail queue is full".to_string())?
            .map_err(|_| "the mailer is shutting down".to_string())?;
        let attempt = async {
            let mut last = String::new();
            for i in 0..TRIES {
                match self.send_once(&msg).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
                if i + 1 < TRIES {
                    tokio::time::sleep(Duration::from_millis(200 * 3u64.pow(i))).await;
                }
            }
            Err(last)
        };
        tokio::time::timeout(DEADLINE, attempt)
            .await
            .map_err(|_| "the mail server did not answer in time".to_string())?
    }
}
