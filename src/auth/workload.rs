//! Workload identity federation (AKS): the service account token the kubelet writes to
//! a file, sent as a `jwt-bearer` client assertion. The file is read for every token
//! request, because the kubelet rotates it.

use std::path::PathBuf;

use super::{Grant, TokenRequest, assertion};
use crate::error::AuthError;
use crate::secret::Secret;

pub struct WorkloadIdentity {
    pub url: String,
    pub client_id: String,
    pub token_file: PathBuf,
    pub scope: String,
}

impl Grant for WorkloadIdentity {
    fn url(&self) -> &str {
        &self.url
    }

    fn request(&self) -> Result<TokenRequest, AuthError> {
        let unavailable = |message: String| AuthError::Unavailable {
            url: self.token_file.display().to_string(),
            message,
        };
        let token = crate::files::read_text(&self.token_file, crate::files::SECRET_CAP)
            .map_err(|e| unavailable(format!("federated_token_file cannot be read: {e}")))?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(unavailable("federated_token_file is empty".into()));
        }
        Ok(TokenRequest::client_credentials(
            &self.url,
            &self.client_id,
            &self.scope,
            assertion(Secret::new(token)),
        ))
    }
}
