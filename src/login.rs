//! The login state machine (placeholder while it is written).

/// Who is asking: recorded in audit rows and sessions.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: String,
    pub user_agent: String,
}
