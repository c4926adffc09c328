//! Attachment re-encoding as of commit 3f0dbd2, before DCT-scaled decoding: every photo is
//! decoded at full size with zune-jpeg, then resized and encoded exactly as now. Kept so
//! `benches/attachments.rs` shows the decode's share side by side in one run.
#![allow(dead_code)]

use fast_image_resize as fir;
use jpeg_encoder::{ColorType, Encoder};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// The largest upload a customer may give (filing-format.md).
pub const MAX_INPUT_BYTES: usize = 2 * 1024 * 1024;
/// The qualities used, best first: 85 when it fits, else 60 (then smaller).
const HIGH: u8 = 85;
const LOW: u8 = 60;
/// Decoded images larger than this many pixels are refused (a 2 MiB JPEG cannot honestly hold
/// more; it protects against decompression bombs). Checked on the header, before decoding.
const MAX_PIXELS: u64 = 64_000_000;
/// A first try that lands between this share of the limit and the limit is kept; below it, one
/// larger size is tried.
const GOOD_ENOUGH: f64 = 0.75;
/// The share of the limit a size estimate aims at.
const AIM: f64 = 0.88;

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

/// The JPEG to send: `bytes` unchanged when it already fits in `max_jpeg_bytes`, else
/// re-encoded (quality 85, then 60; then scaled down) until it fits, never below
/// `min_width` × `min_height` (the aspect ratio is kept).
///
/// Each encode is a trial, so the sizes to try are estimated rather than searched: the first
/// from the input's size, the next from what the previous trial produced (a JPEG's size grows
/// about with its pixel count). Quality 85 is tried only where the estimate says it may fit.
/// Usually one or two encodes of a ~1 MP image.
pub fn prepare_jpeg_full_decode(
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
    let (width, height) = (original.width, original.height);
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
    let mut resizer = Resizer::new(&original, min_width, min_height);
    // The quality-60 size at full scale: re-encoding a camera JPEG (quality ~90) takes it to
    // ~0.8 of its size at 85 and ~0.6 of that at 60. Replaced by measurements as they come.
    let mut low_at_full = bytes.len() as f64 * 0.8 * 0.6;
    let size_low = |low_at_full: f64, scale: f64| low_at_full * scale * scale;
    // Full size when quality 60 may fit there; else the scale the estimate aims at.
    let mut scale = if size_low(low_at_full, 1.0) <= max * 1.2 {
        1.0
    } else {
        aim(max, low_at_full, min_scale)
    };
    // The smallest scale known not to fit (at any quality).
    let mut too_big_at: Option<f64> = (scale < 1.0).then_some(1.0);
    let mut buf = Vec::with_capacity(max_jpeg_bytes * 2);
    loop {
        let img = resizer.at(scale)?;
        // Quality 85 is about 1.8× the size of 60: try it only where that may fit.
        let quality = if size_low(low_at_full, scale) / 0.55 <= max * 1.1 {
            encode(&img, HIGH, &mut buf)?;
            if buf.len() <= max_jpeg_bytes {
                return Ok(buf);
            }
            low_at_full = buf.len() as f64 * 0.55 / (scale * scale);
            if size_low(low_at_full, scale) > max * 1.2 {
                None
            } else {
                encode(&img, LOW, &mut buf)?;
                Some(LOW)
            }
        } else {
            encode(&img, LOW, &mut buf)?;
            Some(LOW)
        };
        if quality.is_some() {
            low_at_full = buf.len() as f64 / (scale * scale);
        }
        if quality.is_some() && buf.len() <= max_jpeg_bytes {
            // A fit with much room to spare and a larger size not ruled out: one step up.
            if scale < 1.0 && (buf.len() as f64) < max * GOOD_ENOUGH {
                let ceiling = too_big_at.map_or(1.0, |t| (t + scale) / 2.0);
                let up = aim(max, low_at_full, min_scale).min(ceiling);
                if up > scale * 1.05 {
                    let bigger = resizer.at(up)?;
                    let mut second = Vec::with_capacity(max_jpeg_bytes);
                    encode(&bigger, LOW, &mut second)?;
                    if second.len() <= max_jpeg_bytes {
                        return Ok(second);
                    }
                }
            }
            return Ok(buf);
        }
        if scale <= min_scale {
            return Err(cannot_fit());
        }
        too_big_at = Some(scale);
        scale = aim(max, low_at_full, min_scale).clamp(scale * 0.5, scale * 0.9);
        scale = scale.max(min_scale);
    }
}

/// The scale at which quality 60 is estimated to land at [`AIM`] of `max`.
fn aim(max: f64, low_at_full: f64, min_scale: f64) -> f64 {
    (max * AIM / low_at_full).sqrt().clamp(min_scale, 1.0)
}

/// Decoded 8-bit pixels: grey (1 channel) or RGB (3).
#[derive(Clone)]
struct Pixels {
    width: u32,
    height: u32,
    grey: bool,
    data: Vec<u8>,
}

impl Pixels {
    fn pixel_type(&self) -> fir::PixelType {
        if self.grey {
            fir::PixelType::U8
        } else {
            fir::PixelType::U8x3
        }
    }
}

/// Scaled copies of one decoded image, each made from the original (never from a copy).
struct Resizer<'a> {
    original: &'a Pixels,
    min_width: u32,
    min_height: u32,
    fir: fir::Resizer,
}

impl<'a> Resizer<'a> {
    fn new(original: &'a Pixels, min_width: u32, min_height: u32) -> Self {
        Self {
            original,
            min_width,
            min_height,
            fir: fir::Resizer::new(),
        }
    }

    /// The image at `scale` (aspect kept, never below the minimum dimensions), filtered with a
    /// bilinear (triangle) kernel widened to the scale, so downscaling averages, never skips.
    fn at(&mut self, scale: f64) -> Result<std::borrow::Cow<'a, Pixels>, AttachmentError> {
        let o = self.original;
        if scale >= 1.0 {
            return Ok(std::borrow::Cow::Borrowed(o));
        }
        let w = ((f64::from(o.width) * scale).round() as u32)
            .max(self.min_width)
            .max(1);
        let h = ((f64::from(o.height) * scale).round() as u32)
            .max(self.min_height)
            .max(1);
        let resize_err =
            |e: &dyn std::fmt::Display| AttachmentError::Encode(format!("resize: {e}"));
        let src = fir::images::ImageRef::new(o.width, o.height, &o.data, o.pixel_type())
            .map_err(|e| resize_err(&e))?;
        let mut dst = fir::images::Image::new(w, h, o.pixel_type());
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
        self.fir
            .resize(&src, &mut dst, &options)
            .map_err(|e| resize_err(&e))?;
        Ok(std::borrow::Cow::Owned(Pixels {
            width: w,
            height: h,
            grey: o.grey,
            data: dst.into_vec(),
        }))
    }
}

/// Decodes with zune-jpeg (the decoder the `image` crate uses, called directly): grey stays
/// grey, every other colour space (YCbCr, CMYK, YCCK) becomes RGB. Lenient like `image`, so a
/// slightly damaged photo that viewers show is still accepted.
fn decode(bytes: &[u8]) -> Result<Pixels, AttachmentError> {
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let fail = |e: &dyn std::fmt::Display| AttachmentError::Decode(e.to_string());
    decoder.decode_headers().map_err(|e| fail(&e))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| AttachmentError::Decode("no frame header".into()))?;
    if width == 0 || height == 0 || (width as u64) * (height as u64) > MAX_PIXELS {
        return Err(AttachmentError::Decode(format!(
            "image too large ({width}×{height})"
        )));
    }
    let grey = matches!(
        decoder.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    let out = if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let data = decoder.decode().map_err(|e| fail(&e))?;
    let channels = if grey { 1 } else { 3 };
    if data.len() != width * height * channels {
        return Err(AttachmentError::Decode(
            "unexpected pixel buffer size".into(),
        ));
    }
    Ok(Pixels {
        width: width as u32,
        height: height as u32,
        grey,
        data,
    })
}

/// Baseline JPEG at `quality` (4:2:0 below quality 90, as cameras and libjpeg do).
fn encode(img: &Pixels, quality: u8, buf: &mut Vec<u8>) -> Result<(), AttachmentError> {
    buf.clear();
    let color = if img.grey {
        ColorType::Luma
    } else {
        ColorType::Rgb
    };
    let (w, h) = (
        u16::try_from(img.width).map_err(|_| AttachmentError::Encode("too wide".into()))?,
        u16::try_from(img.height).map_err(|_| AttachmentError::Encode("too tall".into()))?,
    );
    Encoder::new(&mut *buf, quality)
        .encode(&img.data, w, h, color)
        .map_err(|e| AttachmentError::Encode(e.to_string()))
}
