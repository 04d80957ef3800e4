//! Microsoft Graph: collection pages and safe paging ([`paging`]), and the client
//! that fetches one source's frame page by page ([`client`]) over the
//! [`crate::transport`] within the [`crate::retry`] policy.

pub mod client;
pub mod paging;

pub use client::GraphClient;
pub use paging::{Chunk, ChunkTaker, PageEnd};
