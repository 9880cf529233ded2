//! Cutting a stream of unknown length into segments.

use std::io::{self, Read};
use std::mem;

/// One segment of plaintext, numbered from 0. `last` is set on exactly one segment, the
/// final one; an empty file is a single empty segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Position in the file, from 0.
    pub index: u64,
    /// Whether this is the file's final segment.
    pub last: bool,
    /// The plaintext. Its allocation has room for the tag and erasure padding, so sealing and
    /// coding it in place do not reallocate.
    pub data: Vec<u8>,
}

/// Cuts pushed bytes into segments of a fixed size.
///
/// A full segment is held back until more bytes arrive, because only then is it known not to
/// be the last one. Memory: one segment.
#[derive(Debug)]
pub struct Segmenter {
    size: usize,
    reserve: usize,
    buf: Vec<u8>,
    index: u64,
    /// Whether [`Segmenter::read_from`] has met the end of its reader.
    ended: bool,
}

impl Segmenter {
    /// Segments of `size` bytes whose buffers carry `reserve` spare bytes of capacity.
    pub fn new(size: usize, reserve: usize) -> Self {
        Self { size, reserve, buf: Vec::new(), index: 0, ended: false }
    }

    /// Takes bytes from the front of `input` and returns a segment as soon as one is complete.
    /// Call again while `input` is not empty.
    pub fn push(&mut self, input: &mut &[u8]) -> Option<Segment> {
        while !input.is_empty() {
            if self.buf.len() == self.size {
                return Some(self.take(false));
            }
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.size + self.reserve);
            }
            let n = (self.size - self.buf.len()).min(input.len());
            let (head, tail) = input.split_at(n);
            self.buf.extend_from_slice(head);
            *input = tail;
        }
        None
    }

    /// [`Segmenter::push`] for a source that copies into memory it is handed (a browser's
    /// `ArrayBuffer`): `fill` writes bytes straight into the segment being built, so they are
    /// copied once, not into a buffer of the caller's first. Offers up to `len` bytes; returns
    /// a completed segment, if one was waiting, and how many bytes `fill` was asked for (its
    /// whole argument): call again with the rest while any is left.
    pub fn push_from(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> (Option<Segment>, usize) {
        if len == 0 {
            return (None, 0);
        }
        if self.buf.len() == self.size {
            return (Some(self.take(false)), 0);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.size + self.reserve);
        }
        let start = self.buf.len();
        let n = (self.size - start).min(len);
        self.buf.resize(start + n, 0);
        if let Some(dst) = self.buf.get_mut(start..) {
            fill(dst);
        }
        (None, n)
    }

    /// [`Segmenter::push`] for a source that can be read: reads straight into the segment
    /// being built, so the bytes are copied once (by the reader), not through a buffer of the
    /// caller's first. Returns the next complete segment, or `None` once `reader` is at its end
    /// (then call [`Segmenter::finish`]), with how many bytes were read. After an error, what
    /// is buffered is unspecified: stop using the segmenter.
    ///
    /// A full segment is returned only once a byte of the next has been read (into the next
    /// segment's buffer), so segments are cut exactly as `push` cuts them.
    pub fn read_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<(Option<Segment>, usize)> {
        let mut read = 0;
        // A read short of what was asked met the end (`read_to_end` stops only there): the
        // reader is not asked again, so a terminal needs one end-of-file, not two.
        while !self.ended {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.size + self.reserve);
            }
            if self.buf.len() == self.size {
                let mut next = Vec::with_capacity(self.size + self.reserve);
                let n = fill(reader, &mut next, self.size)?;
                self.ended = n < self.size;
                if n == 0 {
                    break;
                }
                let segment = self.take(false);
                self.buf = next;
                return Ok((Some(segment), read + n));
            }
            let room = self.size - self.buf.len();
            let n = fill(reader, &mut self.buf, self.size)?;
            self.ended = n < room;
            read += n;
        }
        Ok((None, read))
    }

    /// The final segment: whatever is buffered, possibly empty.
    pub fn finish(mut self) -> Segment {
        self.take(true)
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, last: bool) -> Segment {
        let segment = Segment { index: self.index, last, data: mem::take(&mut self.buf) };
        self.index += 1;
        segment
    }
}

/// Reads from `reader` into `buf` until it holds `size` bytes or the reader ends; returns how
/// many were read. The bytes go into the vector's spare capacity, which is not zeroed first.
fn fill<R: Read + ?Sized>(reader: &mut R, buf: &mut Vec<u8>, size: usize) -> io::Result<usize> {
    let room = size.saturating_sub(buf.len());
    reader.take(room as u64).read_to_end(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(size: usize, data: &[u8], chunk: usize) -> Vec<Segment> {
        let mut s = Segmenter::new(size, 0);
        let mut out = Vec::new();
        for mut piece in data.chunks(chunk) {
            while let Some(seg) = s.push(&mut piece) {
                out.push(seg);
            }
        }
        out.push(s.finish());
        out
    }

    #[test]
    fn boundaries() {
        for (len, expect) in [
            (0, vec![0]),
            (1, vec![1]),
            (15, vec![15]),
            (16, vec![16]),
            (17, vec![16, 1]),
            (32, vec![16, 16]),
            (33, vec![16, 16, 1]),
        ] {
            for chunk in [1, 5, 16, 100] {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let segs = cut(16, &data, chunk);
                let lens: Vec<usize> = segs.iter().map(|s| s.data.len()).collect();
                assert_eq!(lens, expect, "len {len} chunk {chunk}");
                assert!(segs.iter().enumerate().all(|(i, s)| s.index == i as u64));
                assert!(segs.iter().rev().skip(1).all(|s| !s.last));
                assert!(segs.last().unwrap().last);
                assert_eq!(segs.concat_data(), data);
            }
        }
    }

    /// Bytes written in through `push_from` are cut exactly as `push` cuts them.
    #[test]
    fn filling_in_place_cuts_as_pushing_does() {
        for len in [0, 1, 15, 16, 17, 32, 33, 50] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for chunk in [1, 5, 16, 100] {
                let mut s = Segmenter::new(16, 3);
                let mut out = Vec::new();
                for piece in data.chunks(chunk) {
                    let mut taken = 0;
                    while taken < piece.len() {
                        let rest = &piece[taken..];
                        let (segment, n) =
                            s.push_from(rest.len(), |dst| dst.copy_from_slice(&rest[..dst.len()]));
                        out.extend(segment);
                        taken += n;
                    }
                }
                out.push(s.finish());
                assert_eq!(out, cut(16, &data, chunk), "len {len} chunk {chunk}");
                assert!(out.iter().all(|s| s.data.capacity() >= 16 + 3 || s.data.is_empty()));
            }
        }
    }

    /// Bytes read in through `read_from` are cut exactly as `push` cuts them, whatever sizes
    /// the reader hands out, every segment keeps its spare capacity, and the reader's end is
    /// read once.
    #[test]
    fn reading_cuts_as_pushing_does() {
        /// Hands out at most `chunk` bytes per read, like a pipe, and counts the reads that
        /// find it at its end.
        struct Trickle<'a>(&'a [u8], usize, usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.2 += usize::from(self.0.is_empty());
                let n = buf.len().min(self.1).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        for len in [0, 1, 15, 16, 17, 32, 33, 50] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for chunk in [1, 5, 16, 100] {
                let mut s = Segmenter::new(16, 3);
                let mut reader = Trickle(&data, chunk, 0);
                let (mut out, mut total) = (Vec::new(), 0);
                loop {
                    let (segment, n) = s.read_from(&mut reader).unwrap();
                    total += n;
                    match segment {
                        Some(segment) => out.push(segment),
                        None => break,
                    }
                }
                assert_eq!(s.read_from(&mut reader).unwrap(), (None, 0), "still at the end");
                assert_eq!(reader.2, 1, "the end is read once: len {len} chunk {chunk}");
                out.push(s.finish());
                assert_eq!(total, len, "len {len} chunk {chunk}");
                assert_eq!(out, cut(16, &data, chunk), "len {len} chunk {chunk}");
                assert!(out.iter().all(|s| s.data.capacity() >= 16 + 3 || s.data.is_empty()));
            }
        }
    }

    /// A read error is returned as it is.
    #[test]
    fn a_read_error_is_returned() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut s = Segmenter::new(16, 0);
        let e = s.read_from(&mut Failing(20)).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
    }

    trait Concat {
        fn concat_data(&self) -> Vec<u8>;
    }
    impl Concat for Vec<Segment> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|s| s.data.iter().copied()).collect()
        }
    }
}
