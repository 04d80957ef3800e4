//! Microsoft Graph: the HTTP boundary ([`transport`]), collection pages and safe
//! paging ([`paging`]), and the sign-ins client that fetches a frame page by page
//! ([`client`]).

pub mod client;
pub mod paging;
pub mod retry;
pub mod transport;

pub use client::GraphClient;
pub use paging::Page;
