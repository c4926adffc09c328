//! The bureau side of the wire: `wire` (SOAP envelopes and return documents, no I/O), `client`
//! (HTTP, authentication, retries), `limiter` (each bureau's rate and concurrency) and
//! `sandbox` (a bureau for trials and tests).

pub mod client;
pub mod limiter;
pub mod retry;
pub mod sandbox;
pub mod wire;
