//! Which AWS failures are worth a retry, and how to name them.
//!
//! DESIGN.md: a message is never lost and never bounced for something the operator can
//! fix. So nearly everything is temporary — throttling, 5xx, network, timeouts, missing or
//! expired credentials, a wrong key, AccessDenied, NoSuchBucket, a paused SES account, a
//! missing configuration set, unknown errors — and only what the service will never take is
//! permanent: S3's `EntityTooLarge`; SES's `MessageRejected`,
//! `MailFromDomainNotVerifiedException` and `BadRequestException` (SES looked at this
//! message and refused it; sending it again gets the same answer).

use crate::delivery::SinkError;
// The SDK error type is smithy's, the same for every AWS service client (S3, SES).
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What kind of failure, as far as a retry is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// SlowDown, 503, 429, *Throttl*: the service asks us to slow down.
    Throttled,
    /// Any other 5xx: the service's own trouble.
    ServerError,
    /// Connecting or reading failed (DNS, refused, reset, TLS).
    Network,
    /// Connect, request or operation timeout.
    Timeout,
    /// No credentials found, or the service refused them (unknown key, bad signature,
    /// expired token, wrong region in the signature).
    Credentials,
    /// The credentials are fine but not allowed to do this (403 AccessDenied, KMS).
    AccessDenied,
    /// The bucket does not exist (yet).
    NoSuchBucket,
    /// A conditional request's condition failed (412): for `If-None-Match: *`, the object
    /// is already there.
    PreconditionFailed,
    /// The store refuses the request's conditional header (501 NotImplemented): it does
    /// not support conditional writes.
    ConditionNotSupported,
    /// The object is bigger than the store will ever take.
    TooLarge,
    /// SES: sending is paused for the account or the configuration set, or the account is
    /// suspended (`SendingPausedException`, `AccountSuspendedException`).
    SendingPaused,
    /// SES: something the request names does not exist (`NotFoundException`: a
    /// configuration set, an identity ARN).
    NotFound,
    /// SES refused this message (`MessageRejected`: an unverified sender, content it will
    /// not send; `MailFromDomainNotVerifiedException`).
    Rejected,
    /// SES found the request itself invalid (`BadRequestException`: an address or a tag it
    /// cannot take).
    BadRequest,
    /// Anything else.
    Other,
}

impl FailureClass {
    /// Only what the service will never take is permanent.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            FailureClass::TooLarge | FailureClass::Rejected | FailureClass::BadRequest
        )
    }

    /// The RFC 3463 status of this class.
    pub fn status(self) -> &'static str {
        match self {
            FailureClass::Throttled => "4.4.5",
            FailureClass::Network => "4.4.1",
            FailureClass::Timeout => "4.4.2",
            FailureClass::Credentials | FailureClass::AccessDenied => "4.7.0",
            FailureClass::NoSuchBucket => "4.2.0",
            FailureClass::TooLarge => "5.3.4",
            // X.3.2 "system not accepting network messages": the account, not this message.
            FailureClass::SendingPaused => "4.3.2",
            // X.3.5 "system incorrectly configured": a name in our config SES does not know.
            FailureClass::NotFound => "4.3.5",
            // Policy (an unverified identity) or content SES will not send: answered 550.
            FailureClass::Rejected => "5.7.1",
            // "Other media error": the message as given cannot be sent: answered 554.
            FailureClass::BadRequest => "5.6.0",
            FailureClass::ServerError
            | FailureClass::PreconditionFailed
            | FailureClass::ConditionNotSupported
            | FailureClass::Other => "4.3.0",
        }
    }
}

/// One failed AWS call, reduced to what the log and the SMTP answer need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    /// The service's error code (`NoSuchBucket`, `SlowDown`), when it sent one.
    pub code: Option<String>,
    /// The HTTP status, when there was a response.
    pub http_status: Option<u16>,
    /// The service's message, or the transport's error chain.
    pub message: String,
    /// `x-amz-request-id` (what AWS support asks for), when there was a response.
    pub request_id: Option<String>,
}

impl Failure {
    /// The sink error for this failure; `context` names the operation and the object,
    /// e.g. `PutObject s3://bucket/key`.
    pub fn to_sink_error(&self, context: &str) -> SinkError {
        let mut text = format!("{context}: ");
        if let Some(code) = &self.code {
            text.push_str(code);
            text.push_str(": ");
        }
        text.push_str(&self.message);
        let mut extra = Vec::new();
        if let Some(s) = self.http_status {
            extra.push(format!("HTTP {s}"));
        }
        if let Some(id) = &self.request_id {
            extra.push(format!("request id {id}"));
        }
        if !extra.is_empty() {
            text.push_str(&format!(" ({})", extra.join(", ")));
        }
        if self.class.is_permanent() {
            SinkError::permanent(self.class.status(), text)
        } else {
            SinkError::temporary(self.class.status(), text)
        }
    }
}

/// Reduces an SDK error of any AWS service client to a [`Failure`].
pub fn describe<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let http_status = err.raw_response().map(|r| r.status().as_u16());
    let request_id = err.raw_response().and_then(|r| {
        r.headers()
            .get("x-amz-request-id")
            .or_else(|| r.headers().get("x-amzn-requestid"))
            .map(str::to_string)
    });
    let code = err.code().map(str::to_string);
    let message = match (err.message(), err) {
        (Some(m), _) if !m.is_empty() => m.to_string(),
        // The transport's own words are nested several layers deep, some of them in Debug
        // form: the innermost cause is what an operator (and a client's 451) can read.
        (_, SdkError::DispatchFailure(_)) => {
            format!("cannot reach the service: {}", root_cause(err))
        }
        (_, SdkError::ResponseError(_)) => {
            format!("an answer that is not the service's: {}", root_cause(err))
        }
        (_, SdkError::TimeoutError(_)) => "no answer in time".to_string(),
        // The chain says what happened ("no credentials", a bad request built here).
        _ => DisplayErrorContext(err).to_string(),
    };
    let class = match err {
        SdkError::TimeoutError(_) => FailureClass::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => FailureClass::Timeout,
        SdkError::DispatchFailure(_) => FailureClass::Network,
        SdkError::ConstructionFailure(_) if message.contains("credentials") => {
            FailureClass::Credentials
        }
        _ => classify(code.as_deref(), http_status, &message),
    };
    Failure {
        class,
        code,
        http_status,
        message,
        request_id,
    }
}

/// The innermost error of a chain ("Connection refused (os error 111)"), on one line and
/// at most 200 characters.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(inner) = e.source() {
        e = inner;
    }
    let text = e.to_string().replace(['\r', '\n'], " ");
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// A local I/O failure while preparing a request (reading the message file).
pub fn describe_io(err: &std::io::Error) -> Failure {
    Failure {
        class: FailureClass::Other,
        code: None,
        http_status: None,
        message: err.to_string(),
        request_id: None,
    }
}

/// The class of a service's answer from its error code and HTTP status. Codes win over
/// statuses: S3 says `SlowDown` with 503 and `AccessDenied` with 403, but other stores
/// send odd statuses with the right codes.
fn classify(code: Option<&str>, status: Option<u16>, message: &str) -> FailureClass {
    let code = code.unwrap_or("");
    match code {
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "ServiceUnavailable"
        // SES: over the send rate or the daily quota; the quota refills.
        | "LimitExceededException" => {
            return FailureClass::Throttled;
        }
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidToken"
        | "TokenRefreshRequired"
        | "AuthorizationHeaderMalformed"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "MissingAuthenticationToken" => {
            return FailureClass::Credentials;
        }
        "AccessDenied" | "AccessDeniedException" | "AllAccessDisabled" => {
            return FailureClass::AccessDenied;
        }
        "NoSuchBucket" => return FailureClass::NoSuchBucket,
        "PreconditionFailed" => return FailureClass::PreconditionFailed,
        "NotImplemented" => return FailureClass::ConditionNotSupported,
        "EntityTooLarge" => return FailureClass::TooLarge,
        "SendingPausedException" | "AccountSuspendedException" => {
            return FailureClass::SendingPaused;
        }
        "NotFoundException" => return FailureClass::NotFound,
        "MessageRejected" | "MailFromDomainNotVerifiedException" => {
            return FailureClass::Rejected;
        }
        "BadRequestException" => return FailureClass::BadRequest,
        _ => {}
    }
    if code.starts_with("KMS.") {
        // A key disabled, missing or not granted to us: the operator's to fix.
        return FailureClass::AccessDenied;
    }
    match status {
        Some(429) | Some(503) => FailureClass::Throttled,
        Some(s) if s >= 500 => {
            if s == 501 {
                FailureClass::ConditionNotSupported
            } else {
                FailureClass::ServerError
            }
        }
        Some(403) => FailureClass::AccessDenied,
        Some(412) => FailureClass::PreconditionFailed,
        // A HEAD answer has no body, so no code: 404 on HeadBucket is a missing bucket.
        Some(404) if message.contains("NoSuchBucket") => FailureClass::NoSuchBucket,
        _ => FailureClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_operator_can_fix_is_temporary() {
        for (code, status, class) in [
            ("SlowDown", 503, FailureClass::Throttled),
            ("", 503, FailureClass::Throttled),
            ("", 429, FailureClass::Throttled),
            ("InternalError", 500, FailureClass::ServerError),
            ("", 502, FailureClass::ServerError),
            ("InvalidAccessKeyId", 403, FailureClass::Credentials),
            ("SignatureDoesNotMatch", 403, FailureClass::Credentials),
            ("ExpiredToken", 400, FailureClass::Credentials),
            ("AccessDenied", 403, FailureClass::AccessDenied),
            ("", 403, FailureClass::AccessDenied),
            ("KMS.DisabledException", 400, FailureClass::AccessDenied),
            ("NoSuchBucket", 404, FailureClass::NoSuchBucket),
            ("InvalidStorageClass", 400, FailureClass::Other),
            ("Whatever", 400, FailureClass::Other),
        ] {
            let got = classify(Some(code), Some(status), "");
            assert_eq!(got, class, "{code} {status}");
            assert!(!got.is_permanent(), "{code} {status}");
            assert!(got.status().starts_with("4."), "{code}");
        }
    }

    #[test]
    fn only_what_the_store_never_takes_is_permanent() {
        let c = classify(Some("EntityTooLarge"), Some(400), "");
        assert!(c.is_permanent());
        assert_eq!(c.status(), "5.3.4");
        assert_eq!(
            classify(Some("PreconditionFailed"), Some(412), ""),
            FailureClass::PreconditionFailed
        );
        assert_eq!(
            classify(Some("NotImplemented"), Some(501), ""),
            FailureClass::ConditionNotSupported
        );
    }

    #[test]
    fn ses_classes() {
        for (code, status, class, smtp) in [
            (
                "TooManyRequestsException",
                429,
                FailureClass::Throttled,
                "4.4.5",
            ),
            (
                "LimitExceededException",
                400,
                FailureClass::Throttled,
                "4.4.5",
            ),
            (
                "SendingPausedException",
                400,
                FailureClass::SendingPaused,
                "4.3.2",
            ),
            (
                "AccountSuspendedException",
                400,
                FailureClass::SendingPaused,
                "4.3.2",
            ),
            ("NotFoundException", 404, FailureClass::NotFound, "4.3.5"),
            ("InternalFailure", 500, FailureClass::ServerError, "4.3.0"),
            (
                "AccessDeniedException",
                403,
                FailureClass::AccessDenied,
                "4.7.0",
            ),
            (
                "UnrecognizedClientException",
                403,
                FailureClass::Credentials,
                "4.7.0",
            ),
            ("MessageRejected", 400, FailureClass::Rejected, "5.7.1"),
            (
                "MailFromDomainNotVerifiedException",
                400,
                FailureClass::Rejected,
                "5.7.1",
            ),
            (
                "BadRequestException",
                400,
                FailureClass::BadRequest,
                "5.6.0",
            ),
        ] {
            let got = classify(Some(code), Some(status), "");
            assert_eq!(got, class, "{code}");
            assert_eq!(got.status(), smtp, "{code}");
            assert_eq!(got.is_permanent(), smtp.starts_with('5'), "{code}");
        }
    }

    #[test]
    fn the_error_text_names_code_status_and_request_id() {
        let f = Failure {
            class: FailureClass::Credentials,
            code: Some("SignatureDoesNotMatch".into()),
            http_status: Some(403),
            message: "The request signature we calculated does not match".into(),
            request_id: Some("REQ1".into()),
        };
        let e = f.to_sink_error("PutObject s3://b/k");
        assert!(e.is_temporary());
        assert_eq!(e.status, "4.7.0");
        assert_eq!(
            e.message,
            "PutObject s3://b/k: SignatureDoesNotMatch: The request signature we calculated \
             does not match (HTTP 403, request id REQ1)"
        );
    }
}
