//! The photo generator lives in the library (`beian_gateway::bench::photo`), shared with the
//! `bench` command; the benches use it through here.

pub use beian_gateway::bench::photo::*;

/// Photo number `seed` as a camera JPEG of about 1 MB (benches only: a failure is a bug here).
pub fn photo_jpeg(seed: u64) -> Vec<u8> {
    beian_gateway::bench::photo::photo_jpeg(seed).expect("encodes")
}
