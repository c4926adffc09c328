//! Attachments for the data file (bureau-protocol.md section 7, filing-format.md): a customer's
//! JPEG (at most 2 MiB) made to fit the bureau's limit on its base64 text — 150 KiB for the
//! verification form, 100 KiB for everything else — by re-encoding (lower quality first, then
//! smaller) without going below the configured minimum dimensions.
//!
//! Owns: the limits and the re-encoding. Must not touch the filesystem, the store or the wire:
//! the caller reads the file and passes its bytes, and base64-encodes the result.

use fast_image_resize as fir;
use jpeg_encoder::{ColorType, Encoder};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::domain::AttachmentKind;

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
/// A scaled decode is at least this much larger (per side) than the size tried first: room for
/// one step up after an estimate 1.44× too high in bytes, without decoding again.
const HEADROOM: f64 = 1.2;

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
/// re-encoded (quality 85, then 60; then scaled down) until it fits, never below
/// `min_width` × `min_height` (the aspect ratio is kept).
///
/// Each encode is a trial, so the sizes to try are estimated rather than searched: the first
/// from the input's size, the next from what the previous trial produced (a JPEG's size grows
/// about with its pixel count). Quality 85 is tried only where the estimate says it may fit.
/// Usually one or two encodes of a ~1 MP image.
///
/// The original is decoded only as finely as the size tried needs: at 1/2, 1/4 or 1/8 of its
/// size (DCT scaling) when that is still at least that size, so a 2400×1800 photo bound for
/// 900×675 is decoded at 1200×900. A later, larger try decodes it again more finely, so the
/// sizes tried and sent are the same as with a full decode.
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
    let header = read_header(bytes)?;
    let (width, height) = (header.width, header.height);
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
    let mut resizer = Resizer::new(bytes, header, min_width, min_height);
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
            encode(img, HIGH, &mut buf)?;
            if buf.len() <= max_jpeg_bytes {
                return Ok(buf);
            }
            low_at_full = buf.len() as f64 * 0.55 / (scale * scale);
            if size_low(low_at_full, scale) > max * 1.2 {
                None
            } else {
                encode(img, LOW, &mut buf)?;
                Some(LOW)
            }
        } else {
            encode(img, LOW, &mut buf)?;
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
                    encode(bigger, LOW, &mut second)?;
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

/// Re-encoded attachments kept from the preflight of a filing until its claim, so a photo is
/// re-encoded once per process rather than twice. Keyed by the MD5 of the original's bytes
/// (a file changed in between is a miss, never a stale hit) and the limits asked for; a result
/// is taken out when the claim uses it. Bounded: results older than [`CACHE_TTL`] are dropped,
/// and beyond [`CACHE_BYTES`] new results are simply not kept (the claim re-encodes, as before).
/// Only results are kept; a refusal is recomputed (it is reported, not sent).
#[derive(Default)]
pub struct PreparedCache {
    inner: std::sync::Mutex<CacheInner>,
}

/// At most this many bytes of re-encoded JPEGs (~400 photos at the 100 KB limit).
const CACHE_BYTES: usize = 32 << 20;
/// A preflight's result older than this is dropped (its filing was claimed elsewhere or failed).
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

type CacheKey = ([u8; 16], usize, u32, u32);

#[derive(Default)]
struct CacheInner {
    entries: std::collections::HashMap<CacheKey, (std::time::Instant, Vec<u8>)>,
    bytes: usize,
}

impl std::fmt::Debug for PreparedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("PreparedCache")
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

impl PreparedCache {
    /// [`prepare_jpeg`], keeping the result for a later [`Self::take_or_prepare`] of the same
    /// bytes and limits (the preflight).
    pub fn prepare(
        &self,
        bytes: &[u8],
        max_jpeg_bytes: usize,
        min_width: u32,
        min_height: u32,
    ) -> Result<Vec<u8>, AttachmentError> {
        let out = prepare_jpeg(bytes, max_jpeg_bytes, min_width, min_height)?;
        if out.len() < bytes.len() {
            let key = cache_key(bytes, max_jpeg_bytes, min_width, min_height);
            let mut inner = self.lock();
            let now = std::time::Instant::now();
            let mut freed = 0;
            inner.entries.retain(|_, (at, jpeg)| {
                let keep = now.duration_since(*at) < CACHE_TTL;
                if !keep {
                    freed += jpeg.len();
                }
                keep
            });
            inner.bytes -= freed;
            if inner.bytes + out.len() <= CACHE_BYTES {
                inner.bytes += out.len();
                if let Some((_, old)) = inner.entries.insert(key, (now, out.clone())) {
                    inner.bytes -= old.len();
                }
            }
        }
        Ok(out)
    }

    /// The result a preflight kept for these bytes and limits (taken out), else
    /// [`prepare_jpeg`] (the claim).
    pub fn take_or_prepare(
        &self,
        bytes: &[u8],
        max_jpeg_bytes: usize,
        min_width: u32,
        min_height: u32,
    ) -> Result<Vec<u8>, AttachmentError> {
        // What fits is sent as it is: nothing was kept for it.
        if bytes.len() > max_jpeg_bytes && bytes.len() <= MAX_INPUT_BYTES {
            let key = cache_key(bytes, max_jpeg_bytes, min_width, min_height);
            let mut inner = self.lock();
            if let Some((_, jpeg)) = inner.entries.remove(&key) {
                inner.bytes -= jpeg.len();
                return Ok(jpeg);
            }
        }
        prepare_jpeg(bytes, max_jpeg_bytes, min_width, min_height)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // The map stays consistent whatever panicked while holding it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many results are kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn cache_key(bytes: &[u8], max_jpeg_bytes: usize, min_width: u32, min_height: u32) -> CacheKey {
    use md5::Digest;
    (
        md5::Md5::digest(bytes).into(),
        max_jpeg_bytes,
        min_width,
        min_height,
    )
}

/// The scale at which quality 60 is estimated to land at [`AIM`] of `max`.
fn aim(max: f64, low_at_full: f64, min_scale: f64) -> f64 {
    (max * AIM / low_at_full).sqrt().clamp(min_scale, 1.0)
}

/// Decoded 8-bit pixels: grey (1 channel) or RGB (3).
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

/// The original's frame header: its size and whether it is grey.
#[derive(Clone, Copy)]
struct Header {
    width: u32,
    height: u32,
    grey: bool,
    /// Colour components in the frame (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK).
    components: u8,
}

/// Sizes of one original, each made from the original's pixels (never from a smaller copy):
/// decoded at the coarsest DCT scale that is still at least the size asked for, then resized.
struct Resizer<'a> {
    bytes: &'a [u8],
    header: Header,
    min_width: u32,
    min_height: u32,
    /// The original decoded at 1/`denominator` of its size (the finest decode so far).
    decoded: Option<(u32, Pixels)>,
    /// The latest resized copy.
    resized: Option<Pixels>,
    fir: fir::Resizer,
}

impl<'a> Resizer<'a> {
    fn new(bytes: &'a [u8], header: Header, min_width: u32, min_height: u32) -> Self {
        Self {
            bytes,
            header,
            min_width,
            min_height,
            decoded: None,
            resized: None,
            fir: fir::Resizer::new(),
        }
    }

    /// The size of the image at `scale` (aspect kept, never below the minimum dimensions, never
    /// above the original).
    fn size_at(&self, scale: f64) -> (u32, u32) {
        let Header { width, height, .. } = self.header;
        if scale >= 1.0 {
            return (width, height);
        }
        let w = ((f64::from(width) * scale).round() as u32)
            .max(self.min_width)
            .clamp(1, width);
        let h = ((f64::from(height) * scale).round() as u32)
            .max(self.min_height)
            .clamp(1, height);
        (w, h)
    }

    /// The image at `scale`, filtered with a bilinear (triangle) kernel widened to the scale,
    /// so downscaling averages, never skips.
    fn at(&mut self, scale: f64) -> Result<&Pixels, AttachmentError> {
        let (w, h) = self.size_at(scale);
        let denominator = dct_denominator(self.header, w, h);
        let finer_needed = self.decoded.as_ref().is_none_or(|(d, _)| *d > denominator);
        if finer_needed {
            // Room for the larger size a trial may lead to, so it rarely needs a second decode.
            let (rw, rh) = self.size_at(scale * HEADROOM);
            let denominator = denominator.min(dct_denominator(self.header, rw, rh));
            let pixels = decode_scaled(self.bytes, self.header, denominator)?;
            self.decoded = Some((denominator, pixels));
        }
        let Some((_, src)) = self.decoded.as_ref() else {
            return Err(AttachmentError::Decode("nothing decoded".into()));
        };
        if (src.width, src.height) == (w, h) {
            return Ok(src);
        }
        let resize_err =
            |e: &dyn std::fmt::Display| AttachmentError::Encode(format!("resize: {e}"));
        let src_ref =
            fir::images::ImageRef::new(src.width, src.height, &src.data, src.pixel_type())
                .map_err(|e| resize_err(&e))?;
        let mut dst = fir::images::Image::new(w, h, src.pixel_type());
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
        self.fir
            .resize(&src_ref, &mut dst, &options)
            .map_err(|e| resize_err(&e))?;
        Ok(self.resized.insert(Pixels {
            width: w,
            height: h,
            grey: src.grey,
            data: dst.into_vec(),
        }))
    }
}

/// The coarsest DCT scaling (1/1, 1/2, 1/4, 1/8; decoders round the size up) whose output is
/// at least `w` × `h`, so the resize after it only ever shrinks.
fn dct_denominator(header: Header, w: u32, h: u32) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|&d| header.width.div_ceil(d) >= w && header.height.div_ceil(d) >= h)
        .unwrap_or(1)
}

/// Reads the frame header with zune-jpeg (without decoding) and refuses decompression bombs.
fn read_header(bytes: &[u8]) -> Result<Header, AttachmentError> {
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), zune_options());
    decoder
        .decode_headers()
        .map_err(|e| AttachmentError::Decode(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| AttachmentError::Decode("no frame header".into()))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(AttachmentError::Decode(format!(
            "image too large ({width}×{height})"
        )));
    }
    let grey = matches!(
        decoder.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    Ok(Header {
        width,
        height,
        grey,
        components: info.components,
    })
}

fn zune_options() -> DecoderOptions {
    DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
}

/// The original at 1/`denominator` of its size. Scaled decodes use jpeg-decoder, whose reduced
/// IDCTs (4×4, 2×2, 1×1 of each 8×8 block) skip most of the transform and colour work; full
/// size, and anything jpeg-decoder refuses or decodes differently than expected (a damaged
/// file it is stricter about, 12-bit samples), goes to zune-jpeg as before, so every photo
/// accepted before is still accepted.
fn decode_scaled(
    bytes: &[u8],
    header: Header,
    denominator: u32,
) -> Result<Pixels, AttachmentError> {
    if denominator > 1 && matches!(header.components, 1 | 3 | 4) {
        // jpeg-decoder is fuzzed, but a panic on a customer's file must not take the daemon
        // down: it only means falling back to the full decode.
        let scaled = std::panic::catch_unwind(|| decode_dct_scaled(bytes, header, denominator));
        if let Ok(Some(pixels)) = scaled {
            return Ok(pixels);
        }
    }
    decode_full(bytes, header)
}

/// jpeg-decoder at 1/`denominator`; `None` when it fails or gives other than 8-bit pixels of
/// the expected size.
fn decode_dct_scaled(bytes: &[u8], header: Header, denominator: u32) -> Option<Pixels> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    let want = |side: u32| u16::try_from(side.div_ceil(denominator)).ok();
    let (w, h) = decoder
        .scale(want(header.width)?, want(header.height)?)
        .ok()?;
    let (w, h) = (u32::from(w), u32::from(h));
    // Never smaller than asked: the resize after it must only shrink.
    if w < header.width.div_ceil(denominator) || h < header.height.div_ceil(denominator) {
        return None;
    }
    let raw = decoder.decode().ok()?;
    let pixels = (w as usize) * (h as usize);
    let (grey, data) = match header.components {
        1 if raw.len() == pixels => (true, raw),
        3 if raw.len() == pixels * 3 => (false, raw),
        // jpeg-decoder gives CMYK as ink amounts (Adobe's inversion undone, YCCK converted):
        // white where there is no ink, darkened by black. The same RGB as zune-jpeg's.
        4 if raw.len() == pixels * 4 => (false, cmyk_to_rgb(&raw)),
        _ => return None,
    };
    if grey != header.grey {
        return None;
    }
    Some(Pixels {
        width: w,
        height: h,
        grey,
        data,
    })
}

/// RGB from CMYK ink amounts: (255 − C)·(255 − K)/255 per channel.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let k = 255 - u32::from(px[3]);
        for &ink in &px[..3] {
            let v = (255 - u32::from(ink)) * k;
            // Rounded division by 255.
            rgb.push(((v + 128 + ((v + 128) >> 8)) >> 8) as u8);
        }
    }
    rgb
}

/// Decodes fully with zune-jpeg (the decoder the `image` crate uses, called directly): grey
/// stays grey, every other colour space (YCbCr, CMYK, YCCK) becomes RGB. Lenient like `image`,
/// so a slightly damaged photo that viewers show is still accepted.
fn decode_full(bytes: &[u8], header: Header) -> Result<Pixels, AttachmentError> {
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), zune_options());
    let fail = |e: &dyn std::fmt::Display| AttachmentError::Decode(e.to_string());
    decoder.decode_headers().map_err(|e| fail(&e))?;
    let out = if header.grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let data = decoder.decode().map_err(|e| fail(&e))?;
    let channels = if header.grey { 1 } else { 3 };
    if data.len() != (header.width as usize) * (header.height as usize) * channels {
        return Err(AttachmentError::Decode(
            "unexpected pixel buffer size".into(),
        ));
    }
    Ok(Pixels {
        width: header.width,
        height: header.height,
        grey: header.grey,
        data,
    })
}

/// Decodes fully (header checks included).
#[cfg(test)]
fn decode(bytes: &[u8]) -> Result<Pixels, AttachmentError> {
    decode_full(bytes, read_header(bytes)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy image (noise compresses badly, so re-encoding has work to do).
    fn noisy_jpeg(w: u32, h: u32, quality: u8) -> Vec<u8> {
        noisy_jpeg_amp(w, h, quality, 0x3f)
    }

    fn noisy_jpeg_amp(w: u32, h: u32, quality: u8, amp: u32) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let n = (state & amp) as u8;
                rgb.extend_from_slice(&[
                    (x % 256) as u8 ^ n,
                    (y % 256) as u8 ^ n,
                    n.wrapping_mul(3),
                ]);
            }
        }
        let mut out = Vec::new();
        Encoder::new(&mut out, quality)
            .encode(&rgb, w as u16, h as u16, ColorType::Rgb)
            .unwrap();
        out
    }

    /// Decodes fully (so a broken output fails here) and gives the dimensions.
    fn dims(jpeg: &[u8]) -> (u32, u32) {
        let img = decode(jpeg).unwrap();
        (img.width, img.height)
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
    fn grey_stays_grey_and_fits() {
        let (w, h) = (1600u32, 1200u32);
        let mut state = 0x1234_5678_u32;
        let grey: Vec<u8> = (0..w * h)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ((i % w) as u8 / 2).wrapping_add((state & 0x1f) as u8)
            })
            .collect();
        let mut jpeg = Vec::new();
        Encoder::new(&mut jpeg, 95)
            .encode(&grey, w as u16, h as u16, ColorType::Luma)
            .unwrap();
        let max = max_jpeg_bytes(AttachmentKind::License);
        assert!(jpeg.len() > max);
        let out = prepare_jpeg(&jpeg, max, 600, 400).unwrap();
        assert!(out.len() <= max);
        let img = decode(&out).unwrap();
        assert!(img.grey);
        assert!(img.width >= 600 && img.height >= 400);
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

    /// A smooth photo-like picture (gradients and gentle waves): scaling it down changes little,
    /// so decodes by different routes can be compared pixel by pixel.
    fn smooth_rgb(w: u32, h: u32) -> Vec<u8> {
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let wave = ((fx * 9.0).sin() * (fy * 7.0).cos() * 40.0) as i32;
                let c = |base: f32, k: i32| (base as i32 + wave * k).clamp(0, 255) as u8;
                rgb.extend_from_slice(&[
                    c(40.0 + 180.0 * fx, 1),
                    c(60.0 + 150.0 * fy, -1),
                    c(120.0, 2),
                ]);
            }
        }
        rgb
    }

    fn encode_with(w: u32, h: u32, data: &[u8], color: ColorType, progressive: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = Encoder::new(&mut out, 92);
        encoder.set_progressive(progressive);
        encoder.encode(data, w as u16, h as u16, color).unwrap();
        out
    }

    /// The original through both decoders: DCT-scaled at 1/`d`, and full size resized to the
    /// same size; the mean absolute difference per sample.
    fn scaled_vs_full(jpeg: &[u8], d: u32) -> f64 {
        let header = read_header(jpeg).unwrap();
        let scaled = decode_dct_scaled(jpeg, header, d).expect("jpeg-decoder decodes it");
        assert_eq!(
            (scaled.width, scaled.height),
            (header.width.div_ceil(d), header.height.div_ceil(d))
        );
        assert_eq!(scaled.grey, header.grey);
        let full = decode_full(jpeg, header).unwrap();
        let src =
            fir::images::ImageRef::new(full.width, full.height, &full.data, full.pixel_type())
                .unwrap();
        let mut dst = fir::images::Image::new(scaled.width, scaled.height, full.pixel_type());
        fir::Resizer::new()
            .resize(
                &src,
                &mut dst,
                &fir::ResizeOptions::new()
                    .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear)),
            )
            .unwrap();
        let resized = dst.into_vec();
        assert_eq!(resized.len(), scaled.data.len());
        let sum: u64 = resized
            .iter()
            .zip(&scaled.data)
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        sum as f64 / resized.len() as f64
    }

    #[test]
    fn dct_scale_is_the_coarsest_still_at_least_the_target() {
        let h = |width, height| Header {
            width,
            height,
            grey: false,
            components: 3,
        };
        assert_eq!(dct_denominator(h(2400, 1800), 900, 675), 2);
        assert_eq!(dct_denominator(h(2400, 1800), 1200, 900), 2);
        assert_eq!(dct_denominator(h(2400, 1800), 1201, 900), 1);
        assert_eq!(dct_denominator(h(2400, 1800), 600, 450), 4);
        assert_eq!(dct_denominator(h(2400, 1800), 2400, 1800), 1);
        // Decoders round up: 1001 / 2 gives 501 columns.
        assert_eq!(dct_denominator(h(1001, 801), 501, 401), 2);
        assert_eq!(dct_denominator(h(4800, 3600), 600, 450), 8);
    }

    #[test]
    fn scaled_decodes_match_full_decodes_for_every_colour_model() {
        let (w, h) = (1280u32, 960u32);
        let rgb = smooth_rgb(w, h);
        let grey: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
        // CMYK ink amounts, stored as Adobe does (jpeg-encoder inverts them).
        let cmyk: Vec<u8> = rgb
            .chunks_exact(3)
            .flat_map(|p| {
                let k = 255 - *p.iter().max().unwrap();
                [255 - p[0] - k, 255 - p[1] - k, 255 - p[2] - k, k]
            })
            .collect();
        for (name, jpeg) in [
            ("ycbcr", encode_with(w, h, &rgb, ColorType::Rgb, false)),
            ("progressive", encode_with(w, h, &rgb, ColorType::Rgb, true)),
            ("grey", encode_with(w, h, &grey, ColorType::Luma, false)),
            ("cmyk", encode_with(w, h, &cmyk, ColorType::Cmyk, false)),
            (
                "ycck",
                encode_with(w, h, &cmyk, ColorType::CmykAsYcck, false),
            ),
        ] {
            for d in [2, 4, 8] {
                let diff = scaled_vs_full(&jpeg, d);
                assert!(diff < 3.0, "{name} at 1/{d}: mean difference {diff}");
            }
        }
    }

    #[test]
    fn scaled_decoding_keeps_the_sizes_of_a_full_decode() {
        // Bound for about a third of its size: decoded at 1/2, sent at the same size and as
        // small as a full decode would have made it.
        let (w, h) = (2400u32, 1800u32);
        let mut rgb = smooth_rgb(w, h);
        let mut state = 0x9e37_79b9_u32;
        for v in &mut rgb {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *v = v.saturating_add((state & 0x0f) as u8);
        }
        let mut jpeg = Vec::new();
        Encoder::new(&mut jpeg, 85)
            .encode(&rgb, w as u16, h as u16, ColorType::Rgb)
            .unwrap();
        assert!(jpeg.len() <= MAX_INPUT_BYTES, "{}", jpeg.len());
        let max = max_jpeg_bytes(AttachmentKind::License);
        assert!(jpeg.len() > max * 4, "{}", jpeg.len());
        let header = read_header(&jpeg).unwrap();
        let mut resizer = Resizer::new(&jpeg, header, 600, 400);
        resizer.at(0.4).unwrap();
        assert_eq!(resizer.decoded.as_ref().map(|(d, _)| *d), Some(2));
        // A larger size than the decode holds decodes again, more finely; never upscales.
        let big = resizer.at(0.8).unwrap();
        assert_eq!((big.width, big.height), (1920, 1440));
        assert_eq!(resizer.decoded.as_ref().map(|(d, _)| *d), Some(1));
        let out = prepare_jpeg(&jpeg, max, 600, 400).unwrap();
        assert!(out.len() <= max);
        let (ow, oh) = dims(&out);
        assert!(ow >= 600 && oh >= 400 && ow <= w && oh <= h, "{ow}×{oh}");
        assert!(
            out.len() as f64 > max as f64 * 0.5,
            "{} is needlessly small",
            out.len()
        );
    }

    #[test]
    fn a_damaged_photo_accepted_before_is_still_accepted() {
        // Cut off: jpeg-decoder refuses it, zune-jpeg fills in the rest as before.
        let jpeg = noisy_jpeg_amp(1600, 1200, 92, 0x0f);
        let cut = &jpeg[..jpeg.len() * 3 / 4];
        let max = max_jpeg_bytes(AttachmentKind::License);
        assert!(cut.len() > max);
        let before = decode(cut).map(|p| (p.width, p.height));
        let now = prepare_jpeg(cut, max, 600, 400);
        assert_eq!(before.is_ok(), now.is_ok(), "{now:?}");
        if let Ok(out) = now {
            assert!(out.len() <= max);
            dims(&out);
        }
    }

    #[test]
    fn the_claim_takes_what_the_preflight_prepared() {
        let cache = PreparedCache::default();
        let jpeg = noisy_jpeg_amp(1600, 1200, 92, 0x0f);
        let max = max_jpeg_bytes(AttachmentKind::License);
        let first = cache.prepare(&jpeg, max, 600, 400).unwrap();
        assert_eq!(cache.len(), 1);
        // Other limits or other bytes are other entries.
        let form = max_jpeg_bytes(AttachmentKind::VerificationForm);
        // Bytes after the end of the image: another file, the same picture.
        let mut changed = jpeg.clone();
        changed.extend_from_slice(&[0, 0]);
        assert_eq!(
            cache.take_or_prepare(&jpeg, form, 600, 400),
            prepare_jpeg(&jpeg, form, 600, 400)
        );
        cache.take_or_prepare(&changed, max, 600, 400).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.take_or_prepare(&jpeg, max, 600, 400).unwrap(), first);
        assert!(cache.is_empty());
        assert_eq!(cache.lock().bytes, 0);
        // What fits as it is, and refusals, are not kept.
        let small = noisy_jpeg(64, 48, 90);
        cache.prepare(&small, max, 10, 10).unwrap();
        assert!(cache.prepare(&jpeg, 2_000, 1500, 1000).is_err());
        assert!(cache.is_empty());
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
