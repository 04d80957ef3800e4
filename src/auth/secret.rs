//! A client secret: the client-credentials grant as the original sent it.

use super::{Grant, TokenRequest};
use crate::error::AuthError;
use crate::secret::Secret;

pub struct ClientSecret {
    pub url: String,
    pub client_id: String,
    pub secret: Secret,
    pub scope: String,
}

impl Grant for ClientSecret {
    fn url(&self) -> &str {
        &self.url
    }

    fn request(&self) -> Result<TokenRequest, AuthError> {
        Ok(TokenRequest::client_credentials(
            &self.url,
            &self.client_id,
            &self.scope,
            vec![("client_secret", self.secret.clone())],
        ))
    }
}
