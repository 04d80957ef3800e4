//! Reusable byte buffers: page bodies (2 to 20 MB for 1,000 sign-ins) and the pieces
//! of Redis commands (1 MiB; a Cluster's whole commands, as large as a page).
//! Allocating and freeing them for every page fragments the allocator's arenas (one
//! per thread) and lets memory creep up with the number of pages. Handing the same
//! buffers from page to page keeps memory flat: there are never more buffers than
//! pages in flight and writes in progress.

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
