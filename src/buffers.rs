//! Reusable byte buffers: the chunks pages are read in (up to 1 MiB) and the pieces of
//! Redis commands (up to 1 MiB; a Cluster's whole commands, as large as a chunk).
//! Allocating and freeing them for every chunk fragments the allocator's arenas (one
//! per thread) and lets memory creep up with the number of chunks. Handing the same
//! buffers from chunk to chunk keeps memory flat: there are never more buffers than
//! chunks in flight and writes in progress — one pool of each per run, not per lane,
//! so a fleet's tenants do not each keep some.

use std::sync::Mutex;

#[derive(Default)]
pub struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// An empty buffer, with the capacity of an earlier page when one is free.
    pub fn take(&self) -> Vec<u8> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        buffer.clear();
        buffer
    }

    pub fn give_back(&self, buffer: Vec<u8>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buffer);
    }
}
