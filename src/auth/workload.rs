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
        let token = std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_string())
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Unavailable {
                url: self.token_file.display().to_string(),
                message: "the federated token file cannot be read or is empty".into(),
            })?;
        Ok(TokenRequest::client_credentials(
            &self.url,
            &self.client_id,
            &self.scope,
            assertion(Secret::new(token)),
        ))
    }
}
