//! A client secret: the client-credentials grant as the original sent it.

use super::{Grant, Method, TokenRequest};
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
        Ok(TokenRequest {
            url: self.url().to_string(),
            method: Method::Post(vec![
                ("client_id", Secret::new(self.client_id.clone())),
                ("client_secret", self.secret.clone()),
                ("scope", Secret::new(self.scope.clone())),
                ("grant_type", Secret::new("client_credentials")),
            ]),
        })
    }
}
