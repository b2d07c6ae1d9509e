//! Errors as the admin API answers them: a 4xx or 5xx status with a JSON body
//! `{"error": CODE, "message": TEXT}`. Texts shown to users follow the guide's "Error
//! Conditions"; a server-side failure is logged in full and answered without detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::access::AccessError;
use crate::licensing::LicensingError;
use crate::proofing::ProofingError;
use crate::store::StoreError;
use crate::token::{TokenError, TransitionError};
use crate::users::{ConnectError, UserError};

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `wrong_codes`.
    pub error: String,
    /// A text for people.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A failure of the appliance itself: logged, answered without detail.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %error, "admin API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "This action cannot be completed at this time. Try again later.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UserExists(name) => ApiError::new(
                StatusCode::CONFLICT,
                "user_exists",
                format!("user `{name}` already exists"),
            ),
            StoreError::TokenExists(serial) => ApiError::new(
                StatusCode::CONFLICT,
                "token_exists",
                format!("token `{serial}` already exists"),
            ),
            StoreError::OwnerTaken { .. } | StoreError::OwnerTwice { .. } => {
                ApiError::new(StatusCode::CONFLICT, "user_has_token", e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        use StatusCode as S;
        let (status, code) = match &e {
            TokenError::NoSuchToken(_) => (S::NOT_FOUND, "token_not_found"),
            TokenError::NoSuchUser(_) => (S::NOT_FOUND, "user_not_found"),
            TokenError::WrongCodes => (S::UNPROCESSABLE_ENTITY, "wrong_codes"),
            TokenError::NotAvailable { .. } => (S::CONFLICT, "token_not_available"),
            TokenError::UserHasToken { .. } => (S::CONFLICT, "user_has_token"),
            TokenError::RegistrationBlocked(_) => (S::LOCKED, "registration_blocked"),
            TokenError::ResyncBlocked(_) => (S::LOCKED, "resync_blocked"),
            TokenError::Transition {
                refused: TransitionError::NotFromState { .. },
                ..
            } => (S::CONFLICT, "invalid_state"),
            TokenError::Transition {
                refused: TransitionError::NotByActor { .. },
                ..
            } => (S::FORBIDDEN, "not_allowed"),
            TokenError::NoExpiry(_) => (S::CONFLICT, "no_expiry"),
            TokenError::LicenseKey => (S::UNPROCESSABLE_ENTITY, "invalid_license_key"),
            TokenError::PurchaseRequired => (S::UNPROCESSABLE_ENTITY, "purchase_required"),
            TokenError::ProofingRequired(_) => (S::UNPROCESSABLE_ENTITY, "proofing_required"),
            TokenError::TermsRequired { .. } => (S::UNPROCESSABLE_ENTITY, "terms_required"),
            TokenError::Contention(_) => (S::SERVICE_UNAVAILABLE, "busy"),
            TokenError::Import(_) => (S::BAD_REQUEST, "bad_import"),
            TokenError::Store(_) | TokenError::Seal(_) => {
                return match e {
                    TokenError::Store(e) => e.into(),
                    other => ApiError::internal(other),
                }
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> ApiError {
        match e {
            UserError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "user_exists", e.to_string())
            }
            UserError::Store(e) => e.into(),
            UserError::Hash(_) => ApiError::internal(e),
            other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", other.to_string()),
        }
    }
}

impl From<LicensingError> for ApiError {
    fn from(e: LicensingError) -> ApiError {
        match e {
            LicensingError::Store(e) => e.into(),
            LicensingError::NoSuchUser(_) => ApiError::not_found("user_not_found", e.to_string()),
            other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", other.to_string()),
        }
    }
}

impl From<ConnectError> for ApiError {
    fn from(e: ConnectError) -> ApiError {
        match e {
            ConnectError::Store(e) => e.into(),
            ConnectError::NoSuchUser(_) => ApiError::not_found("user_not_found", e.to_string()),
            other => ApiError::new(StatusCode::CONFLICT, "cannot_connect", other.to_string()),
        }
    }
}

impl From<ProofingError> for ApiError {
    fn from(e: ProofingError) -> ApiError {
        use StatusCode as S;
        let (status, code) = match &e {
            ProofingError::Store(_) => {
                return match e {
                    ProofingError::Store(e) => e.into(),
                    _ => ApiError::internal("unreachable"),
                }
            }
            ProofingError::NoSuchUser(_) => (S::NOT_FOUND, "user_not_found"),
            ProofingError::Refused(_) => (S::CONFLICT, "invalid_state"),
            ProofingError::NotUnitedStates(_) => (S::UNPROCESSABLE_ENTITY, "instant_us_only"),
            ProofingError::Invalid(_) => (S::BAD_REQUEST, "invalid_field"),
            ProofingError::WrongCode(_) => (S::UNPROCESSABLE_ENTITY, "wrong_code"),
            ProofingError::CodeUnusable => (S::UNPROCESSABLE_ENTITY, "code_unusable"),
            ProofingError::Contention(_) => (S::SERVICE_UNAVAILABLE, "busy"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> ApiError {
        match e {
            AccessError::Store(e) => e.into(),
            AccessError::NameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "name_taken", e.to_string())
            }
            other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", other.to_string()),
        }
    }
}
