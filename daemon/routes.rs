//! The one routing function (being written).

use hyper::{Method, StatusCode};

use crate::app::{json_resp, ApiError, App, Req, Resp};

/// A low-cardinality label for metrics.
pub fn label(_method: &Method, _path: &str) -> &'static str {
    "other"
}

/// Whether the per-IP login rate limit applies to this request.
pub fn is_rate_limited(method: &Method, path: &str) -> bool {
    method == Method::POST && path.starts_with("/v1/login")
}

pub async fn route(_app: &App, _req: Req) -> Result<Resp, ApiError> {
    Ok(json_resp(StatusCode::OK, &serde_json::json!({})))
}
