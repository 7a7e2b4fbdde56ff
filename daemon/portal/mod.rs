//! The browser portal and forward-auth (being written).

use crate::app::{ApiError, App, Req, Resp};

/// `GET /v1/auth/verify`: may this browser's request pass the reverse proxy?
pub async fn verify(_app: &App, _req: Req) -> Result<Resp, ApiError> {
    Err(ApiError::unauthorized())
}

/// Pages, forms and assets.
pub async fn route(_app: &App, _req: Req) -> Result<Resp, ApiError> {
    Err(ApiError::not_found())
}
