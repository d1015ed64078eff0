//! The `mesh.identity.Identity` gRPC service: token → service account → the only
//! identity that account may have → a certificate from the [`Ca`].
//!
//! This is the one place where the CA's and the validators' errors become a
//! `grpc-status`, and every call is counted once, by outcome, in
//! `identity_certify_total{result}`.

use super::{Ca, Reject, TokenError, TokenValidator};
use crate::metrics::Metrics;
use crate::tls_incoming;
use mesh_api::identity::{identity_server, CertifyRequest, CertifyResponse};
use rustls::ServerConfig;
use std::{sync::Arc, time::SystemTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::{transport::Server, Code, Request, Response, Status};

/// A CSR larger than this is not one a proxy sends.
const MAX_CSR_BYTES: usize = 16 * 1024;

/// The identity service's state: shared, read-only, cheap to clone.
#[derive(Clone)]
pub struct IdentityService {
    ca: Arc<Ca>,
    tokens: Arc<dyn TokenValidator>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("trust_domain", &self.ca.trust_domain())
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    pub fn new(ca: Arc<Ca>, tokens: Arc<dyn TokenValidator>, metrics: Arc<Metrics>) -> Self {
        Self {
            ca,
            tokens,
            metrics,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> identity_server::IdentityServer<Self> {
        identity_server::IdentityServer::new(self)
    }

    async fn certify_inner(&self, req: CertifyRequest) -> Result<CertifyResponse, Failure> {
        if req.identity.is_empty() {
            return Err(Failure::request("identity is required"));
        }
        if req.token.is_empty() {
            return Err(Failure::request("token is required"));
        }
        if req.certificate_signing_request.is_empty() {
            return Err(Failure::request("certificate_signing_request is required"));
        }
        if req.certificate_signing_request.len() > MAX_CSR_BYTES {
            return Err(Failure::request(
                "certificate_signing_request is larger than 16 KiB",
            ));
        }
        let account = self
            .tokens
            .validate(&req.token)
            .await
            .map_err(|e| self.token_failure(e))?;
        let allowed = account.identity(self.ca.trust_domain());
        if req.identity != allowed {
            return Err(Failure {
                result: "identity_mismatch",
                status: Status::permission_denied(format!(
                    "token is for {allowed}, not {}",
                    req.identity
                )),
            });
        }
        let issued = self
            .ca
            .certify(
                &req.identity,
                &req.certificate_signing_request,
                SystemTime::now(),
            )
            .map_err(|reject| {
                let code = match reject {
                    Reject::MalformedCsr(_) | Reject::BadSignature | Reject::InvalidIdentity(_) => {
                        Code::InvalidArgument
                    }
                    Reject::WeakKey(_)
                    | Reject::UnsupportedKey(_)
                    | Reject::IdentityMismatch { .. } => Code::FailedPrecondition,
                    Reject::Signing(_) => Code::Internal,
                };
                Failure {
                    result: reject.label(),
                    status: Status::new(code, reject.to_string()),
                }
            })?;
        tracing::debug!(identity = %req.identity, "certified");
        Ok(CertifyResponse {
            leaf_certificate: issued.leaf,
            intermediate_certificates: issued.chain,
            valid_until: Some(prost_types::Timestamp::from(issued.valid_until)),
        })
    }
}

impl IdentityService {
    /// What the caller of a token that proved nothing is told. A token the controller
    /// could not review is the controller's problem: logged at warn and counted in
    /// `identity_token_review_errors_total{reason}`, while the caller learns only that
    /// it is unauthenticated (or, the API server not answering, to come back later),
    /// never the controller's account or the RBAC rule it lacks.
    fn token_failure(&self, error: TokenError) -> Failure {
        match error {
            TokenError::Invalid(why) => Failure {
                result: "bad_token",
                status: Status::unauthenticated(format!("bad token: {why}")),
            },
            TokenError::Refused { reason, message } => {
                self.metrics.token_review_error(reason);
                tracing::warn!(
                    reason,
                    error = %message,
                    "the API server refused the controller's TokenReview: no proxy gets a certificate until the controller's ClusterRole allows `create` on tokenreviews.authentication.k8s.io (and its credentials are valid)"
                );
                Failure {
                    result: "token_unavailable",
                    status: Status::unauthenticated("unauthenticated"),
                }
            }
            TokenError::Unavailable(why) => {
                self.metrics.token_review_error("unavailable");
                tracing::warn!(error = %why, "cannot review a token: the API server does not answer");
                Failure {
                    result: "token_unavailable",
                    status: Status::unavailable("cannot review the token now; try again later"),
                }
            }
        }
    }
}

/// A refused call: its metrics label and what the caller is told.
struct Failure {
    result: &'static str,
    status: Status,
}

impl Failure {
    fn request(why: &str) -> Self {
        Self {
            result: "invalid_request",
            status: Status::invalid_argument(why),
        }
    }
}

#[tonic::async_trait]
impl identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        match self.certify_inner(request.into_inner()).await {
            Ok(response) => {
                self.metrics.certify("ok");
                Ok(Response::new(response))
            }
            Err(Failure { result, status }) => {
                self.metrics.certify(result);
                tracing::debug!(result, message = status.message(), "certify refused");
                Err(status)
            }
        }
    }
}

/// Serves `service` over TLS (`tls`) on `listener` until `shutdown` is cancelled,
/// then drains.
pub async fn serve(
    listener: TcpListener,
    service: IdentityService,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tls_incoming::incoming(
        "identity",
        listener,
        TlsAcceptor::from(tls),
        shutdown.clone(),
    );
    Server::builder()
        .serve_with_incoming_shutdown(service.into_server(), incoming, shutdown.cancelled_owned())
        .await
}
