//! The code as it was before the performance work (commit 9bfc3b7), kept so the benches can
//! show old and new side by side in one run on this noisy machine: re-encoding with the `image`
//! crate (its own JPEG encoder, triangle resize), the zip crate at level 6, and MD5, AES and
//! base64 as three separate passes.

use std::io::{Cursor, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use md5::{Digest, Md5};

const QUALITIES: [u8; 2] = [85, 60];
const MAX_PIXELS: u64 = 64_000_000;

/// `package::zip_one` before: the zip crate, deflate level 6.
pub fn zip_one_before(entry_name: &str, data: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(data.len() / 3 + 256)));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(6));
    writer.start_file(entry_name, options).unwrap();
    writer.write_all(data).unwrap();
    writer.finish().unwrap().into_inner()
}

/// `package::pack_zip` before: MD5, AES and base64 one after the other, each over all bytes.
pub fn pack_zip_before(zip: &[u8], key: &beian_gateway::package::AesKey) -> (String, String) {
    let hash = B64.encode(Md5::digest(zip));
    (B64.encode(key.encrypt(zip)), hash)
}

/// The JPEG to send: `bytes` unchanged when it already fits in `max_jpeg_bytes`, else
/// re-encoded (quality 85, then 60; then scaled down in steps) until it fits, never below
/// `min_width` × `min_height` (the aspect ratio is kept).
pub fn prepare_jpeg_before(
    bytes: &[u8],
    max_jpeg_bytes: usize,
    min_width: u32,
    min_height: u32,
) -> Result<Vec<u8>, String> {
    if bytes.len() <= max_jpeg_bytes {
        return Ok(bytes.to_vec());
    }
    let original = decode(bytes)?;
    let (width, height) = (original.width(), original.height());
    let cannot_fit = || format!("cannot fit {width}x{height}");
    if width < min_width || height < min_height {
        return Err(cannot_fit());
    }
    // The smallest scale that keeps both sides at or above the minimum.
    let min_scale = (f64::from(min_width) / f64::from(width))
        .max(f64::from(min_height) / f64::from(height))
        .min(1.0);
    let max = max_jpeg_bytes as f64;
    // Full-size encodes are the expensive ones: skip them when even quality 60 cannot fit
    // (re-encoding rarely takes a JPEG below ~half its size at 85, ~0.6 of that at 60).
    let hopeless_full = bytes.len() as f64 * 0.8 * 0.6 > max * 1.2;
    let mut scale = if hopeless_full {
        ((max / (bytes.len() as f64 * 0.8 * 0.6)).sqrt() * 0.95).clamp(min_scale, 1.0)
    } else {
        1.0
    };
    // The smallest scale known not to fit (at any quality).
    let mut too_big_at = if hopeless_full { Some(1.0) } else { None };
    let mut buf = Vec::with_capacity(max_jpeg_bytes * 2);
    loop {
        let img = scaled(&original, scale, min_width, min_height);
        match encode_to_fit(&img, max_jpeg_bytes, &mut buf)? {
            Fit::Fits(quality) => {
                // A fit with much room to spare and a larger size not ruled out: one step up.
                if scale < 1.0 && (buf.len() as f64) < max * 0.75 {
                    let ceiling = too_big_at.map_or(1.0, |t| (t + scale) / 2.0);
                    let up = (scale * (max / buf.len() as f64).sqrt() * 0.97).min(ceiling);
                    if up > scale * 1.05 {
                        let bigger = scaled(&original, up, min_width, min_height);
                        let mut second = Vec::with_capacity(max_jpeg_bytes);
                        encode(&bigger, quality, &mut second)?;
                        if second.len() <= max_jpeg_bytes {
                            return Ok(second);
                        }
                    }
                }
                return Ok(buf);
            }
            Fit::TooBig(smallest) => {
                if scale <= min_scale {
                    return Err(cannot_fit());
                }
                too_big_at = Some(scale);
                // Size grows about with the pixel count: aim a little under the limit.
                let guess = scale * (max / smallest as f64).sqrt() * 0.95;
                scale = guess.clamp(scale * 0.5, scale * 0.9).max(min_scale);
            }
        }
    }
}

enum Fit {
    /// `buf` holds a JPEG within the limit, at this quality.
    Fits(u8),
    /// Nothing fitted; the smallest (possibly estimated) size seen.
    TooBig(usize),
}

/// Tries the qualities best first, skipping a lower one that would clearly not fit either.
fn encode_to_fit(img: &DynamicImage, max: usize, buf: &mut Vec<u8>) -> Result<Fit, String> {
    let mut smallest = usize::MAX;
    for (k, &q) in QUALITIES.iter().enumerate() {
        // Quality 60 is roughly 0.55× the size of 85.
        if k > 0 && smallest as f64 * 0.55 > max as f64 * 1.2 {
            return Ok(Fit::TooBig((smallest as f64 * 0.55) as usize));
        }
        encode(img, q, buf)?;
        if buf.len() <= max {
            return Ok(Fit::Fits(q));
        }
        smallest = smallest.min(buf.len());
    }
    Ok(Fit::TooBig(smallest))
}

/// The image at `scale` (aspect kept, never below the minimum dimensions).
fn scaled(
    original: &DynamicImage,
    scale: f64,
    min_width: u32,
    min_height: u32,
) -> std::borrow::Cow<'_, DynamicImage> {
    if scale >= 1.0 {
        return std::borrow::Cow::Borrowed(original);
    }
    let w = ((f64::from(original.width()) * scale).round() as u32)
        .max(min_width)
        .max(1);
    let h = ((f64::from(original.height()) * scale).round() as u32)
        .max(min_height)
        .max(1);
    std::borrow::Cow::Owned(original.resize_exact(w, h, FilterType::Triangle))
}

fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?;
    if u64::from(img.width()) * u64::from(img.height()) > MAX_PIXELS {
        return Err("image too large".to_string());
    }
    // JPEG carries L8 or RGB8; anything else (CMYK arrives as RGB) becomes RGB8.
    Ok(match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

fn encode(img: &DynamicImage, quality: u8, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    JpegEncoder::new_with_quality(&mut *buf, quality)
        .encode_image(img)
        .map_err(|e| e.to_string())
}
