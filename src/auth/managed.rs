//! A managed identity: tokens from the instance metadata service (`Metadata: true`,
//! VMs and AKS nodes) or from App Service's `IDENTITY_ENDPOINT` (`X-IDENTITY-HEADER`),
//! for the Graph resource; `client_id` picks a user-assigned identity.

use super::ManagedEndpoint;
use super::{Grant, Method, TokenRequest};
use crate::error::AuthError;
use crate::secret::Secret;

pub struct ManagedIdentity {
    url: String,
    headers: Vec<(&'static str, Secret)>,
}

impl ManagedIdentity {
    pub fn new(endpoint: &ManagedEndpoint, client_id: Option<String>, resource: String) -> Self {
        let (mut url, version, headers) = match endpoint {
            ManagedEndpoint::Imds(origin) => {
                let mut url = origin.clone();
                url.set_path("/metadata/identity/oauth2/token");
                (url, "2018-02-01", vec![("Metadata", Secret::new("true"))])
            }
            ManagedEndpoint::AppService { url, header } => (
                url.clone(),
                "2019-08-01",
                vec![("X-IDENTITY-HEADER", header.clone())],
            ),
        };
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("api-version", version);
            query.append_pair("resource", &resource);
            if let Some(id) = &client_id {
                query.append_pair("client_id", id);
            }
        }
        ManagedIdentity {
            url: url.to_string(),
            headers,
        }
    }
}

impl Grant for ManagedIdentity {
    fn url(&self) -> &str {
        &self.url
    }

    fn request(&self) -> Result<TokenRequest, AuthError> {
        Ok(TokenRequest {
            url: self.url().to_string(),
            method: Method::Get(self.headers.clone()),
        })
    }
}
