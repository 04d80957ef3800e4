//! Reusable byte buffers. A page body and the Redis command built from it are ~1.5 MB
//! each; allocating and freeing them for every page fragments the allocator's arenas
//! (one per thread) and lets memory creep up with the number of pages. Handing the
//! same buffers from page to page keeps memory flat: there are never more buffers
//! than pages in flight.

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
