//! Integration tests: msgx-once against a real redis-server and a real msgx-sim.

mod auth;
mod common;
mod config;
mod credentials;
mod deployment;
mod edges;
mod export;
mod faults;
mod formats;
mod hostile;
mod late;
mod loss;
mod operations;
mod queues;
mod sizes;
mod soak;
mod sources;
mod state;
mod tenants;
