//! Microsoft Graph: collection pages and safe paging ([`paging`]), and the client
//! that fetches one source's frame page by page ([`client`]) over the
//! [`crate::transport`] within the [`crate::retry`] policy.

mod client;
mod paging;

pub use client::{BudgetSpent, GraphClient, PageShape};
pub use paging::{Chunk, ChunkTaker, PageEnd};
