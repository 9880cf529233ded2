//! WebAssembly SIMD (`simd128`) backend, added for shardweb's browser node.
//!
//! Four blocks at a time, one block per lane: vector `x[i]` holds state word `i` of blocks
//! `n..n + 4`, so each quarter round is the scalar one on whole vectors, and the results are
//! transposed back into four consecutive blocks. A single block (the tail of a message) runs
//! the portable rounds.

use crate::{Block, ChaChaCore, StreamClosure, Unsigned, STATE_WORDS};
use cipher::{
    consts::{U4, U64},
    BlockSizeUser, ParBlocks, ParBlocksSizeUser, StreamBackend,
};
use core::arch::wasm32::*;
use core::marker::PhantomData;

#[inline]
pub(crate) fn inner<R, F>(core: &mut ChaChaCore<R>, f: F)
where
    R: Unsigned,
    F: StreamClosure<BlockSize = U64>,
{
    let mut backend = Backend::<R> { state: core.state, _pd: PhantomData };
    f.call(&mut backend);
    core.state[12] = backend.state[12];
}

struct Backend<R: Unsigned> {
    state: [u32; STATE_WORDS],
    _pd: PhantomData<R>,
}

impl<R: Unsigned> BlockSizeUser for Backend<R> {
    type BlockSize = U64;
}

impl<R: Unsigned> ParBlocksSizeUser for Backend<R> {
    type ParBlocksSize = U4;
}

impl<R: Unsigned> StreamBackend for Backend<R> {
    #[inline(always)]
    fn gen_ks_block(&mut self, block: &mut Block) {
        let res = super::soft::run_rounds::<R>(&self.state);
        self.state[12] = self.state[12].wrapping_add(1);
        for (chunk, val) in block.chunks_exact_mut(4).zip(res.iter()) {
            chunk.copy_from_slice(&val.to_le_bytes());
        }
    }

    #[inline(always)]
    fn gen_par_ks_blocks(&mut self, blocks: &mut ParBlocks<Self>) {
        let counter = self.state[12];
        let mut init = [u32x4_splat(0); STATE_WORDS];
        for (v, &word) in init.iter_mut().zip(self.state.iter()) {
            *v = u32x4_splat(word);
        }
        init[12] = u32x4(
            counter,
            counter.wrapping_add(1),
            counter.wrapping_add(2),
            counter.wrapping_add(3),
        );
        let mut x = init;
        for _ in 0..R::USIZE {
            quarter_round(&mut x, 0, 4, 8, 12);
            quarter_round(&mut x, 1, 5, 9, 13);
            quarter_round(&mut x, 2, 6, 10, 14);
            quarter_round(&mut x, 3, 7, 11, 15);
            quarter_round(&mut x, 0, 5, 10, 15);
            quarter_round(&mut x, 1, 6, 11, 12);
            quarter_round(&mut x, 2, 7, 8, 13);
            quarter_round(&mut x, 3, 4, 9, 14);
        }
        for (v, i) in x.iter_mut().zip(init.iter()) {
            *v = u32x4_add(*v, *i);
        }
        // Words 4g..4g + 4 of the four blocks: a 4 x 4 transpose, one row per block.
        for g in 0..4 {
            let (a, b, c, d) = (x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]);
            let ab_lo = i32x4_shuffle::<0, 4, 1, 5>(a, b);
            let ab_hi = i32x4_shuffle::<2, 6, 3, 7>(a, b);
            let cd_lo = i32x4_shuffle::<0, 4, 1, 5>(c, d);
            let cd_hi = i32x4_shuffle::<2, 6, 3, 7>(c, d);
            let rows = [
                i64x2_shuffle::<0, 2>(ab_lo, cd_lo),
                i64x2_shuffle::<1, 3>(ab_lo, cd_lo),
                i64x2_shuffle::<0, 2>(ab_hi, cd_hi),
                i64x2_shuffle::<1, 3>(ab_hi, cd_hi),
            ];
            for (block, row) in blocks.iter_mut().zip(rows) {
                let out = &mut block[16 * g..16 * g + 16];
                // SAFETY: `out` is 16 writable bytes, and `v128_store` has no alignment
                // requirement.
                unsafe { v128_store(out.as_mut_ptr() as *mut v128, row) };
            }
        }
        self.state[12] = counter.wrapping_add(4);
    }
}

#[inline(always)]
fn quarter_round(x: &mut [v128; STATE_WORDS], a: usize, b: usize, c: usize, d: usize) {
    x[a] = u32x4_add(x[a], x[b]);
    x[d] = rotl16(v128_xor(x[d], x[a]));
    x[c] = u32x4_add(x[c], x[d]);
    x[b] = rotl(v128_xor(x[b], x[c]), 12);
    x[a] = u32x4_add(x[a], x[b]);
    x[d] = rotl8(v128_xor(x[d], x[a]));
    x[c] = u32x4_add(x[c], x[d]);
    x[b] = rotl(v128_xor(x[b], x[c]), 7);
}

#[inline(always)]
fn rotl(v: v128, n: u32) -> v128 {
    v128_or(u32x4_shl(v, n), u32x4_shr(v, 32 - n))
}

/// Rotation by whole bytes is a byte shuffle within each lane.
#[inline(always)]
fn rotl16(v: v128) -> v128 {
    i8x16_shuffle::<2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13>(v, v)
}

#[inline(always)]
fn rotl8(v: v128) -> v128 {
    i8x16_shuffle::<3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14>(v, v)
}
