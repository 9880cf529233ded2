//! A Reed–Solomon engine for wasm32 with SIMD128, the browser's build.
//!
//! `reed-solomon-simd` has engines for x86 (SSSE3, AVX2) and aarch64 (Neon); on wasm32 it
//! falls back to its portable engine, which works through a 16-bit multiplication table one
//! element at a time. This engine does the same arithmetic as its SSSE3 engine: a product in
//! GF(2^16) is the XOR of four table lookups, one per nibble of the element, each giving both
//! bytes of a partial product; for 16 elements at once each byte of each lookup is one
//! `i8x16.swizzle` (the `pshufb` of wasm: an index of 16 or more gives 0, and the indices here
//! are nibbles), so eight swizzles per 16 products. The algorithm and its tables are the crate's,
//! so the shards it computes are the same bytes as any other engine's; tests hold it to that.
//!
//! Layout of the crate's work buffers: a chunk of 64 bytes holds 32 field elements, their low
//! bytes in the first 32 bytes and their high bytes in the last 32.
//!
//! Indexing here cannot go out of bounds: a multiplier's table is looked up by a 16-bit
//! logarithm in a table of 2^16 entries, and the skew table and the shards by the positions of
//! the crate's FFT schedule, which its own engines index the same way.
#![allow(clippy::indexing_slicing)]

use core::arch::wasm32::{
    u8x16_splat, u8x16_swizzle, u64x2_shr, v128, v128_and, v128_load, v128_store, v128_xor,
};

use reed_solomon_simd::engine::{
    Engine, GF_MODULUS, GfElement, ShardsRefMut,
    tables::{self, Mul128, Multiply128lutT, Skew},
    utils,
};

/// The Reed–Solomon engine for wasm32 with SIMD128.
#[derive(Clone, Copy)]
pub struct Simd128 {
    mul128: &'static Mul128,
    skew: &'static Skew,
}

impl Simd128 {
    /// An engine, with the crate's tables (built once, by the first engine).
    pub fn new() -> Self {
        Self { mul128: tables::get_mul128(), skew: tables::get_skew() }
    }
}

impl Default for Simd128 {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Simd128 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Simd128")
    }
}

// The only unsafe code: wasm's vector loads and stores take a raw pointer. Each one here reads
// or writes exactly the 16-byte slots of a borrowed array.

/// One 64-byte chunk as four vectors: elements 0-15 low bytes, 16-31 low bytes, 0-15 high
/// bytes, 16-31 high bytes.
#[allow(unsafe_code)]
#[inline(always)]
fn load(chunk: &[u8; 64]) -> [v128; 4] {
    let p = chunk.as_ptr().cast::<v128>();
    // SAFETY: the chunk is 64 readable bytes; `v128_load` takes any alignment.
    unsafe { [v128_load(p), v128_load(p.add(1)), v128_load(p.add(2)), v128_load(p.add(3))] }
}

#[allow(unsafe_code)]
#[inline(always)]
fn store(chunk: &mut [u8; 64], v: [v128; 4]) {
    let p = chunk.as_mut_ptr().cast::<v128>();
    // SAFETY: the chunk is 64 writable bytes; `v128_store` takes any alignment.
    unsafe {
        v128_store(p, v[0]);
        v128_store(p.add(1), v[1]);
        v128_store(p.add(2), v[2]);
        v128_store(p.add(3), v[3]);
    }
}

/// The 16-entry tables of one multiplier: `[lo[0..4], hi[0..4]]`.
#[allow(unsafe_code)]
#[inline(always)]
fn tables_of(lut: &Multiply128lutT) -> [[v128; 4]; 2] {
    let load = |t: &u128| {
        // SAFETY: a `u128` is 16 readable bytes; `v128_load` takes any alignment.
        unsafe { v128_load(core::ptr::from_ref(t).cast::<v128>()) }
    };
    [lut.lo.each_ref().map(load), lut.hi.each_ref().map(load)]
}

/// The products of 16 elements (low bytes `lo`, high bytes `hi`) by the multiplier of `t`.
#[inline(always)]
fn mul_16(lo: v128, hi: v128, t: &[[v128; 4]; 2]) -> (v128, v128) {
    let mask = u8x16_splat(0x0f);
    let nibbles = [
        v128_and(lo, mask),
        v128_and(u64x2_shr(lo, 4), mask),
        v128_and(hi, mask),
        v128_and(u64x2_shr(hi, 4), mask),
    ];
    let mut prod_lo = u8x16_swizzle(t[0][0], nibbles[0]);
    let mut prod_hi = u8x16_swizzle(t[1][0], nibbles[0]);
    for (i, n) in nibbles.into_iter().enumerate().skip(1) {
        prod_lo = v128_xor(prod_lo, u8x16_swizzle(t[0][i], n));
        prod_hi = v128_xor(prod_hi, u8x16_swizzle(t[1][i], n));
    }
    (prod_lo, prod_hi)
}

/// The products of one chunk's 32 elements by the multiplier of `t`.
#[inline(always)]
fn mul_chunk(x: [v128; 4], t: &[[v128; 4]; 2]) -> [v128; 4] {
    let (p0_lo, p0_hi) = mul_16(x[0], x[2], t);
    let (p1_lo, p1_hi) = mul_16(x[1], x[3], t);
    [p0_lo, p1_lo, p0_hi, p1_hi]
}

#[inline(always)]
fn xor4(a: [v128; 4], b: [v128; 4]) -> [v128; 4] {
    [v128_xor(a[0], b[0]), v128_xor(a[1], b[1]), v128_xor(a[2], b[2]), v128_xor(a[3], b[3])]
}

impl Simd128 {
    /// FFT butterfly over chunk pairs: `x ^= y * m; y ^= x`.
    #[inline(always)]
    fn fft_butterfly(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement) {
        let t = tables_of(&self.mul128[log_m as usize]);
        for (x, y) in x.iter_mut().zip(y.iter_mut()) {
            let yv = load(y);
            let xv = xor4(load(x), mul_chunk(yv, &t));
            store(x, xv);
            store(y, xor4(yv, xv));
        }
    }

    /// IFFT butterfly over chunk pairs: `y ^= x; x ^= y * m`.
    #[inline(always)]
    fn ifft_butterfly(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement) {
        let t = tables_of(&self.mul128[log_m as usize]);
        for (x, y) in x.iter_mut().zip(y.iter_mut()) {
            let xv = load(x);
            let yv = xor4(load(y), xv);
            store(y, yv);
            store(x, xor4(xv, mul_chunk(yv, &t)));
        }
    }

    /// The FFT butterfly, or only its XOR where the multiplier is zero (log `GF_MODULUS`).
    #[inline(always)]
    fn fft_step(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement) {
        if log_m == GF_MODULUS {
            utils::xor(y, x);
        } else {
            self.fft_butterfly(x, y, log_m);
        }
    }

    /// The IFFT butterfly, or only its XOR where the multiplier is zero.
    #[inline(always)]
    fn ifft_step(&self, x: &mut [[u8; 64]], y: &mut [[u8; 64]], log_m: GfElement) {
        if log_m == GF_MODULUS {
            utils::xor(y, x);
        } else {
            self.ifft_butterfly(x, y, log_m);
        }
    }
}

/// The multipliers (logarithms) of one group of two layers.
#[derive(Clone, Copy)]
struct Layers {
    m01: GfElement,
    m02: GfElement,
    m23: GfElement,
}

impl Simd128 {
    /// One pass of two layers at distance `dist` (the FFT's and the IFFT's share it; they
    /// differ in the order of their four butterflies): for every group of 4 × `dist` shards up
    /// to `truncated_size`, `step` gets each quad of shards `dist` apart, with the group's
    /// multipliers from the skew table.
    #[inline(always)]
    fn two_layers(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        dist: usize,
        truncated_size: usize,
        skew_delta: usize,
        step: impl Fn([&mut [[u8; 64]]; 4], Layers),
    ) {
        let mut r = 0;
        while r < truncated_size {
            let base = r + dist + skew_delta - 1;
            let m = Layers {
                m01: self.skew[base],
                m02: self.skew[base + dist],
                m23: self.skew[base + dist * 2],
            };
            for i in r..r + dist {
                let (s0, s1, s2, s3) = data.dist4_mut(pos + i, dist);
                step([s0, s1, s2, s3], m);
            }
            r += dist * 4;
        }
    }
}

impl Engine for Simd128 {
    fn fft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated_size: usize,
        skew_delta: usize,
    ) {
        // Two layers at a time, from the widest distance down.
        let mut dist4 = size;
        let mut dist = size >> 2;
        while dist != 0 {
            self.two_layers(data, pos, dist, truncated_size, skew_delta, |[s0, s1, s2, s3], m| {
                self.fft_step(s0, s2, m.m02);
                self.fft_step(s1, s3, m.m02);
                self.fft_step(s0, s1, m.m01);
                self.fft_step(s2, s3, m.m23);
            });
            dist4 = dist;
            dist >>= 2;
        }
        // The last layer, when the number of layers is odd.
        if dist4 == 2 {
            let mut r = 0;
            while r < truncated_size {
                let log_m = self.skew[r + skew_delta];
                let (x, y) = data.dist2_mut(pos + r, 1);
                self.fft_step(x, y, log_m);
                r += 2;
            }
        }
    }

    fn ifft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated_size: usize,
        skew_delta: usize,
    ) {
        // Two layers at a time, from distance 1 up.
        let mut dist = 1;
        let mut dist4 = 4;
        while dist4 <= size {
            self.two_layers(data, pos, dist, truncated_size, skew_delta, |[s0, s1, s2, s3], m| {
                self.ifft_step(s0, s1, m.m01);
                self.ifft_step(s2, s3, m.m23);
                self.ifft_step(s0, s2, m.m02);
                self.ifft_step(s1, s3, m.m02);
            });
            dist = dist4;
            dist4 <<= 2;
        }
        // The last layer, when the number of layers is odd.
        if dist < size {
            let log_m = self.skew[dist + skew_delta - 1];
            if log_m == GF_MODULUS {
                utils::xor_within(data, pos + dist, pos, dist);
            } else {
                let (mut a, mut b) = data.split_at_mut(pos + dist);
                for i in 0..dist {
                    self.ifft_butterfly(&mut a[pos + i], &mut b[i], log_m);
                }
            }
        }
    }

    fn mul(&self, x: &mut [[u8; 64]], log_m: GfElement) {
        let t = tables_of(&self.mul128[log_m as usize]);
        for chunk in x.iter_mut() {
            store(chunk, mul_chunk(load(chunk), &t));
        }
    }
}
