//! The bureau side of the wire: `wire` (SOAP envelopes and return documents, no I/O), `client`
//! (HTTP, authentication, retries) and `sandbox` (a bureau for trials and tests).

pub mod client;
pub mod retry;
pub mod sandbox;
pub mod wire;
