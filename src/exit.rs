//! Exit codes of `msgx-once`, documented in the README (Exit codes): what a run
//! tells cron. [`crate::error::Error`] maps every error to one of them.

/// Every frame was fetched and written.
pub const OK: u8 = 0;
/// At least one frame failed: the export is incomplete.
pub const INCOMPLETE: u8 = 1;
/// Usage or configuration error: nothing was exported.
pub const USAGE: u8 = 2;
/// The identity platform refused the credentials.
pub const AUTH: u8 = 3;
/// Another run holds the lock: this one wrote nothing.
pub const LOCKED: u8 = 4;
/// Interrupted by SIGINT (128 + 2).
pub const SIGINT: u8 = 130;
/// Interrupted by SIGTERM (128 + 15).
pub const SIGTERM: u8 = 143;
