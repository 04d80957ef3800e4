//! A lane: one source of one tenant, the unit a run plans, fetches, writes and commits
//! — its identity (tenant, source), where its records and progress go (its keys, its
//! file), and what each page asks for. `config` builds one per tenant × source, once;
//! the adapters (Graph client, sink, state) read what they need of it.

use std::path::PathBuf;

use crate::files::Output;
use crate::sources::SourceSpec;

/// One source's share of a run, as the options make it: where its records go, what
/// each page asks for, how finely its ranges are cut.
#[derive(Debug, Clone)]
pub struct Lane {
    pub spec: &'static SourceSpec,
    /// The tenant it is exported from, when the run exports several (`tenants`); None:
    /// the one tenant of the credential.
    pub tenant: Option<String>,
    /// Where its records go: `queue_key` for signins, `{queue_key}:{source}` for the
    /// others, unless `queue_keys` says otherwise. Its state keys follow it.
    pub queue_key: String,
    /// `$top`: `page_size`, at most the source's cap.
    pub page_size: u32,
    /// `$select`: the sign-in sources only.
    pub select: Option<Vec<String>>,
    /// How many frames each of its ranges is cut into: its share of the fetchers (at
    /// least one; every tenant × source has a share), so a quiet source's minute costs
    /// one request a pass, not one per fetcher.
    pub frames_per_range: usize,
    /// Its records are keyed by id and content (`signin_updates`, for the sign-in
    /// sources): a changed record is delivered again.
    pub versioned: bool,
    /// The file backend's output, `{source}` replaced by its name.
    pub file_path: Output,
    /// The log and file backends' state file, `{source}` replaced by its name.
    pub state_file: Option<PathBuf>,
    /// The tenant whose records these are, as the options name it (`tenants`' entry,
    /// else `tenant`; None: a managed identity's own): kept in the state, so that a
    /// key every tenant would share tells whose progress it holds.
    pub owner: Option<String>,
    /// The same tenant × source's queue key under the other key layout (one `tenant`
    /// ↔ `tenants`), where an earlier configuration may have left its progress.
    pub other_layout: Option<OtherLayout>,
}

/// Where a tenant × source's progress is when the run before exported its tenant
/// under the other key layout: `tenant: A` keeps `q`, `tenants: [A, …]` keeps `q:A`.
/// Its progress is carried over once, so that a switch neither starts the tenant over
/// (losing what came in since its last run) nor reads anything twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherLayout {
    pub queue_key: String,
    /// The key is the one-tenant layout's, which names no tenant: its progress is this
    /// lane's only if it says so (its `tenant`), or — written before progress named
    /// its tenant — if `claims_unnamed` (this lane's tenant is the one `tenant` names,
    /// or the only one of `tenants`).
    pub shared: Option<Shared>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    pub claims_unnamed: bool,
}

impl Lane {
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// What log lines and summaries call it: `contoso.onmicrosoft.com signins` when
    /// the run exports several tenants, else the source's name.
    pub fn label(&self) -> String {
        crate::sources::label(self.tenant.as_deref(), self.spec)
    }

    /// The name of its Redis key of `purpose` (`state`, `lock`, `seen`), in its
    /// queue's Cluster slot.
    pub fn key(&self, purpose: &str) -> String {
        crate::keys::derived(&self.queue_key, purpose)
    }
}
