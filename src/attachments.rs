//! Attachments for the data file (bureau-protocol.md section 7, filing-format.md): a customer's
//! JPEG (at most 2 MiB) made to fit the bureau's limit on its base64 text — 150 KiB for the
//! verification form, 100 KiB for everything else — by re-encoding (lower quality first, then
//! smaller) without going below the configured minimum dimensions.
//!
//! Owns: the limits and the re-encoding. Must not touch the filesystem, the store or the wire:
//! the caller reads the file and passes its bytes, and base64-encodes the result.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use crate::domain::AttachmentKind;

/// The largest upload a customer may give (filing-format.md).
pub const MAX_INPUT_BYTES: usize = 2 * 1024 * 1024;
/// Qualities tried at each size, best first.
const QUALITIES: [u8; 2] = [85, 60];
/// Decoded images larger than this many pixels are refused (a 2 MiB JPEG cannot honestly hold
/// more; it protects against decompression bombs).
const MAX_PIXELS: u64 = 64_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachmentError {
    #[error("not a JPEG file (the bytes do not start with FF D8 FF)")]
    NotJpeg,
    #[error("{len} bytes is over the {max} bytes an attachment may have")]
    TooLarge { len: usize, max: usize },
    #[error("the JPEG cannot be decoded: {0}")]
    Decode(String),
    #[error("the JPEG cannot be encoded: {0}")]
    Encode(String),
    #[error(
        "cannot fit in {max} bytes at {min_width}×{min_height} or larger (the image is {width}×{height})"
    )]
    CannotFit {
        max: usize,
        width: u32,
        height: u32,
        min_width: u32,
        min_height: u32,
    },
}

/// The bureau's limit on an attachment's base64 text (1 KB = 1024 bytes), also for `Spwj`.
pub fn max_base64_len(kind: AttachmentKind) -> usize {
    match kind {
        AttachmentKind::VerificationForm => 150 * 1024,
        _ => 100 * 1024,
    }
}

/// The largest JPEG whose base64 fits [`max_base64_len`]: 115200 / 76800 bytes.
pub fn max_jpeg_bytes(kind: AttachmentKind) -> usize {
    max_base64_len(kind) / 4 * 3
}

/// The JPEG to send: `bytes` unchanged when it already fits in `max_jpeg_bytes`, else
/// re-encoded (quality 85, then 60; then scaled down in steps) until it fits, never below
/// `min_width` × `min_height` (the aspect ratio is kept).
pub fn prepare_jpeg(
    bytes: &[u8],
    max_jpeg_bytes: usize,
    min_width: u32,
    min_height: u32,
) -> Result<Vec<u8>, AttachmentError> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(AttachmentError::NotJpeg);
    }
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(AttachmentError::TooLarge {
            len: bytes.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    if bytes.len() <= max_jpeg_bytes {
        return Ok(bytes.to_vec());
    }
    let original = decode(bytes)?;
    let (width, height) = (original.width(), original.height());
    let cannot_fit = || AttachmentError::CannotFit {
        max: max_jpeg_bytes,
        width,
        height,
        min_width,
        min_height,
    };
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
fn encode_to_fit(
    img: &DynamicImage,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Fit, AttachmentError> {
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

fn decode(bytes: &[u8]) -> Result<DynamicImage, AttachmentError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| AttachmentError::Decode(e.to_string()))?;
    if u64::from(img.width()) * u64::from(img.height()) > MAX_PIXELS {
        return Err(AttachmentError::Decode("image too large".into()));
    }
    // JPEG carries L8 or RGB8; anything else (CMYK arrives as RGB) becomes RGB8.
    Ok(match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

fn encode(img: &DynamicImage, quality: u8, buf: &mut Vec<u8>) -> Result<(), AttachmentError> {
    buf.clear();
    JpegEncoder::new_with_quality(&mut *buf, quality)
        .encode_image(img)
        .map_err(|e| AttachmentError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// A noisy image (noise compresses badly, so re-encoding has work to do).
    fn noisy_jpeg(w: u32, h: u32, quality: u8) -> Vec<u8> {
        noisy_jpeg_amp(w, h, quality, 0x3f)
    }

    fn noisy_jpeg_amp(w: u32, h: u32, quality: u8, amp: u32) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        let img = RgbImage::from_fn(w, h, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let n = (state & amp) as u8;
            Rgb([(x % 256) as u8 ^ n, (y % 256) as u8 ^ n, n.wrapping_mul(3)])
        });
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(&DynamicImage::ImageRgb8(img))
            .unwrap();
        out
    }

    fn dims(jpeg: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn limits() {
        assert_eq!(max_jpeg_bytes(AttachmentKind::VerificationForm), 115_200);
        assert_eq!(max_jpeg_bytes(AttachmentKind::License), 76_800);
        assert_eq!(max_jpeg_bytes(AttachmentKind::PreApproval), 76_800);
    }

    #[test]
    fn not_a_jpeg_and_too_large_are_refused() {
        assert_eq!(
            prepare_jpeg(b"\x89PNG\r\n", 1000, 1, 1),
            Err(AttachmentError::NotJpeg)
        );
        let mut big = vec![0xFF, 0xD8, 0xFF];
        big.resize(MAX_INPUT_BYTES + 1, 0);
        assert!(matches!(
            prepare_jpeg(&big, 1000, 1, 1),
            Err(AttachmentError::TooLarge { .. })
        ));
        let garbage = [0xFF, 0xD8, 0xFF, 0, 1, 2, 3, 4];
        assert!(matches!(
            prepare_jpeg(&garbage, 4, 1, 1),
            Err(AttachmentError::Decode(_))
        ));
    }

    #[test]
    fn small_enough_is_returned_unchanged() {
        let jpeg = noisy_jpeg(64, 48, 90);
        assert_eq!(prepare_jpeg(&jpeg, jpeg.len(), 10, 10).unwrap(), jpeg);
    }

    #[test]
    fn large_is_reencoded_to_fit_at_or_above_min_dims() {
        let jpeg = noisy_jpeg_amp(1600, 1200, 92, 0x0f);
        let max = max_jpeg_bytes(AttachmentKind::License);
        assert!(jpeg.len() <= MAX_INPUT_BYTES, "{}", jpeg.len());
        assert!(jpeg.len() > max);
        let out = prepare_jpeg(&jpeg, max, 600, 400).unwrap();
        assert!(out.len() <= max, "{} > {max}", out.len());
        let (w, h) = dims(&out);
        assert!(w >= 600 && h >= 400, "{w}×{h}");
        assert!(w <= 1600 && h <= 1200);
    }

    #[test]
    fn cannot_fit_above_min_dims_is_an_error() {
        let jpeg = noisy_jpeg(800, 600, 95);
        assert!(matches!(
            prepare_jpeg(&jpeg, 2_000, 700, 500),
            Err(AttachmentError::CannotFit {
                width: 800,
                height: 600,
                ..
            })
        ));
        assert!(matches!(
            prepare_jpeg(&jpeg, 2_000, 900, 100),
            Err(AttachmentError::CannotFit { .. })
        ));
    }

    #[test]
    fn the_large_fixture_fits_the_form_limit() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/attachments/F-FIRST-EXP/form-0.jpg"
        );
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.len() > 1_500_000);
        let max = max_jpeg_bytes(AttachmentKind::VerificationForm);
        let start = std::time::Instant::now();
        let out = prepare_jpeg(&bytes, max, 600, 400).unwrap();
        eprintln!(
            "re-encoded {} → {} bytes in {:?}",
            bytes.len(),
            out.len(),
            start.elapsed()
        );
        assert!(out.len() <= max);
        let (w, h) = dims(&out);
        assert!(w >= 600 && h >= 400, "{w}×{h}");
    }
}
