//! The one error type of the HTTP API: it tells the client what it may know and logs the rest.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_store::StoreError;

/// An API error, mapped to a status code and a JSON body `{"error": code, "message": text}`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The sender failed authentication (a handshake or a message MAC).
    #[error("{0}")]
    Unauthorized(String),
    /// The device may not do this (unknown, not admitted, revoked, no pending admission).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists but is not ready yet (a request without its answer): ask again later.
    #[error("{0}")]
    NotYet(String),
    /// The path exists, but not for this method.
    #[error("method not allowed on this endpoint; see docs/api.md")]
    MethodNotAllowed,
    /// The state does not allow it (e.g. a request that already has its answer).
    #[error("{0}")]
    Conflict(String),
    /// The body is over the endpoint's limit: `413 too_large`.
    #[error("{0}")]
    TooLarge(String),
    /// A quota is used up (e.g. open sharing requests for one owner): `429 quota`.
    #[error("{0}")]
    Quota(String),
    /// Too many admissions in progress, a lost race, or the hub is at one of its load limits (connections of a
    /// kind, request bytes in flight); try again after the `Retry-After` seconds.
    #[error("busy, try again")]
    Busy,
    /// This client sent more requests of this kind than its rate allows; try again after the given seconds.
    #[error("too many requests from this address; try again in {0} s")]
    RateLimited(u64),
    /// The request body did not arrive within the hub's body deadline.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Something failed inside the hub; the details are logged, not sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The short code sent to clients (`bad_request`, `unauthorized`, …).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::NotYet(_) => (StatusCode::NOT_FOUND, "not_answered"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Quota(_) => (StatusCode::TOO_MANY_REQUESTS, "quota"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge("the body is larger than this endpoint takes (docs/api.md)".into())
        } else {
            Self::BadRequest(e.body_text())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownDevice(d) => Self::Forbidden(format!("device {d} is not admitted")),
            StoreError::NoPendingAdmission(d) => Self::Forbidden(format!(
                "device {d} has no pending admission (unknown, expired or already used)"
            )),
            StoreError::AlreadyAdmitted(d) => {
                Self::Forbidden(format!("device {d} is already admitted"))
            }
            StoreError::InvalidInput(what) => Self::BadRequest(what.into()),
            StoreError::NameTaken => Self::Conflict("the account name is taken".into()),
            StoreError::QueueFull(d) => Self::Quota(format!(
                "device {d} has too many control messages waiting; try again once it answers"
            )),
            StoreError::UnknownControl(d, id) => {
                Self::NotFound(format!("no control message {id} for device {d}"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        } else {
            tracing::debug!(%status, message = %self, "request refused");
        }
        let retry_after = match self {
            Self::Busy => Some(1),
            Self::RateLimited(seconds) => Some(seconds.max(1)),
            _ => None,
        };
        let mut response = (
            status,
            Json(serde_json::json!({"error": code, "message": self.to_string()})),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
