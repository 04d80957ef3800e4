//! What the pipeline is given: each lane's client and sink, and the frames to fetch.

use crate::graph::GraphClient;
use crate::sink::Sink;
use crate::sources::SourceSpec;
use crate::window::{Frame, Pass};

/// One source's share of the run: where its pages come from and go to.
#[derive(Clone, Copy)]
pub struct OpenLane<'a> {
    /// The tenant it exports from, when the run exports several.
    pub tenant: Option<&'a str>,
    pub client: &'a GraphClient,
    pub sink: &'a dyn Sink,
    /// Records are keyed by id and content (`signin_updates`): a changed record is
    /// delivered again.
    pub versioned: bool,
}

impl OpenLane<'_> {
    pub fn source(&self) -> &'static SourceSpec {
        self.client.source()
    }
}

/// A frame of one lane, and which read of its seconds it is.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub lane: usize,
    /// The frame's place in its lane's window (jobs are ordered otherwise).
    pub index: usize,
    pub frame: Frame,
    pub pass: Pass,
}
