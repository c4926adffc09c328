//! Deterministic photo-like JPEGs: a 2400×1800 picture of smooth gradients and value noise at
//! several scales (shapes, texture) plus per-pixel grain (a camera sensor's noise), encoded as a
//! phone would (quality 90, 4:2:0): about 1 MB, compressing like a photo rather than like
//! flat colour (too easy) or white noise (too hard).

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

pub const WIDTH: u32 = 2400;
pub const HEIGHT: u32 = 1800;

/// xorshift64: small, fast and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// In [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Value noise on a lattice of `cell` pixels, smoothstep-interpolated, in [-1, 1].
struct Lattice {
    cols: usize,
    cell: f32,
    v: Vec<f32>,
}

impl Lattice {
    fn new(w: u32, h: u32, cell: u32, rng: &mut Rng) -> Self {
        let cols = (w / cell + 2) as usize;
        let rows = (h / cell + 2) as usize;
        let v = (0..cols * rows).map(|_| rng.unit() * 2.0 - 1.0).collect();
        Lattice {
            cols,
            cell: cell as f32,
            v,
        }
    }

    fn at(&self, x: u32, y: u32) -> f32 {
        let fx = x as f32 / self.cell;
        let fy = y as f32 / self.cell;
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let (tx, ty) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let i = iy * self.cols + ix;
        let a = self.v[i] + (self.v[i + 1] - self.v[i]) * tx;
        let b = self.v[i + self.cols] + (self.v[i + self.cols + 1] - self.v[i + self.cols]) * tx;
        a + (b - a) * ty
    }
}

/// RGB pixels of photo number `seed`.
pub fn photo_rgb(w: u32, h: u32, seed: u64) -> Vec<u8> {
    const GRAIN: f32 = 14.0;
    let mut rng = Rng::new(seed);
    let octaves: Vec<(Lattice, f32)> = [(w / 3, 60.0), (w / 12, 35.0), (w / 60, 20.0), (6, 14.0)]
        .into_iter()
        .map(|(cell, amp)| (Lattice::new(w, h, cell.max(2), &mut rng), amp))
        .collect();
    let chroma = Lattice::new(w, h, (w / 8).max(2), &mut rng);
    let tint = [rng.unit(), rng.unit(), rng.unit()];
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let mut l = 90.0 + 80.0 * (y as f32 / h as f32) + 30.0 * (x as f32 / w as f32);
            for (lattice, amp) in &octaves {
                l += lattice.at(x, y) * amp;
            }
            let grain = (rng.unit() - 0.5) * GRAIN;
            let shift = chroma.at(x, y) * 25.0;
            let c =
                |k: usize, s: f32| (l * (0.7 + 0.5 * tint[k]) + s + grain).clamp(0.0, 255.0) as u8;
            rgb.extend_from_slice(&[c(0, shift), c(1, -shift * 0.5), c(2, -shift)]);
        }
    }
    rgb
}

/// Photo number `seed` as a camera JPEG of about 1 MB.
pub fn photo_jpeg(seed: u64) -> Result<Vec<u8>, jpeg_encoder::EncodingError> {
    let rgb = photo_rgb(WIDTH, HEIGHT, seed);
    let mut out = Vec::with_capacity(1 << 20);
    let mut encoder = Encoder::new(&mut out, 90);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder.encode(&rgb, WIDTH as u16, HEIGHT as u16, ColorType::Rgb)?;
    Ok(out)
}
