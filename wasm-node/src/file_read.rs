//! Reading the file an upload sends, from its start to its end, by a task of its own that
//! stays a few chunks ahead of the node.
//!
//! The bytes come through the file's byte stream (`Blob.stream()`, read with a BYOB reader)
//! into a few buffers of one chunk each, used in turn: a chunk's buffer goes back to the task
//! once the node has copied the chunk into wasm memory. In Chromium this costs a quarter (a
//! file in memory) to three fifths (a file on disk) of the CPU that reading the same file by
//! `slice(..).arrayBuffer()` does: per 128 MiB in 4 MiB chunks, 0.07 and 0.18 against 0.31 s,
//! because every slice is a new blob and every `arrayBuffer()` a new buffer the browser has
//! to fault in. Where a browser's `Blob.stream()` has no BYOB reader, the task reads by
//! slices instead.

use futures::StreamExt;
use futures::channel::mpsc;
use js_sys::{ArrayBuffer, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, ReadableStreamByobReader};

use crate::error::{NodeError, describe};

/// Chunks read ahead of the one the node is copying: the browser serves reads from another
/// process, which shares the machine with the node, so one read ahead left the node waiting
/// for the next in a tenth of a 256 MiB put.
pub const READS_AHEAD: usize = 2;

/// How the task gets the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBy {
    /// The byte stream, into buffers given back (falling back to slices where it cannot).
    Stream,
    /// `slice(..).arrayBuffer()`, a new buffer per chunk: what `Stream` falls back to, asked
    /// for by itself only by the tests of that path.
    #[cfg_attr(not(test), allow(dead_code))]
    Slices,
}

/// A file being read in order, in chunks of a given size (the last one shorter). At most
/// [`READS_AHEAD`] + 1 chunks are held at once, read or being read: the task reads another
/// only once a chunk is given back ([`FileRead::give_back`], or the next [`FileRead::next`]).
#[derive(Debug)]
pub struct FileRead {
    chunks: mpsc::UnboundedReceiver<Result<Uint8Array, NodeError>>,
    free: mpsc::UnboundedSender<Option<ArrayBuffer>>,
    /// The chunk last handed out, until it is given back.
    lent: Option<Uint8Array>,
    left: u64,
}

impl FileRead {
    /// Starts reading the first `size` bytes of `blob` in chunks of `chunk` bytes.
    pub fn start(blob: &Blob, size: u64, chunk: u32, by: ReadBy) -> Self {
        let (free, free_rx) = mpsc::unbounded();
        let (chunks_tx, chunks) = mpsc::unbounded();
        for _ in 0..=READS_AHEAD {
            let _ = free.unbounded_send(None);
        }
        let (blob, chunk) = (blob.clone(), chunk.max(1));
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = read(&blob, size, chunk, by, free_rx, &chunks_tx).await {
                let _ = chunks_tx.unbounded_send(Err(e));
            }
        });
        Self { chunks, free, lent: None, left: size }
    }

    /// The next chunk, or `None` once all `size` bytes have come; the chunk before is given
    /// back first, so it must not be used after this call (its buffer is read into again). A
    /// file that cannot be read, or that ends before `size` bytes (changed since it was
    /// chosen), is [`NodeError::FileUnreadable`].
    pub async fn next(&mut self) -> Result<Option<Uint8Array>, NodeError> {
        self.give_back();
        if self.left == 0 {
            return Ok(None);
        }
        let chunk = self.chunks.next().await.unwrap_or_else(|| {
            Err(NodeError::FileUnreadable { detail: "the file's reading stopped".into() })
        })?;
        self.left = self.left.saturating_sub(chunk.length().into());
        self.lent = Some(chunk.clone());
        Ok(Some(chunk))
    }

    /// Gives the chunk last handed out back, to be read into again, as soon as the caller is
    /// done with it; the next [`FileRead::next`] does it otherwise.
    pub fn give_back(&mut self) {
        if let Some(chunk) = self.lent.take() {
            let _ = self.free.unbounded_send(Some(chunk.buffer()));
        }
    }
}

fn unreadable(e: JsValue) -> NodeError {
    NodeError::FileUnreadable { detail: describe(&e) }
}

/// The stream's reader, let go of however the reading ends.
struct Reader(ReadableStreamByobReader);

impl Drop for Reader {
    fn drop(&mut self) {
        // At the end of the file too: the upload reads no further. A stream that failed
        // rejects the cancel; that is no news.
        let cancel = JsFuture::from(self.0.cancel());
        wasm_bindgen_futures::spawn_local(async move {
            let _ = cancel.await;
        });
    }
}

/// The file's byte stream with a BYOB reader, or `None` where there is none.
fn byob_reader(blob: &Blob) -> Option<Reader> {
    let stream = blob.stream();
    match ReadableStreamByobReader::new(&stream) {
        Ok(reader) => Some(Reader(reader)),
        Err(_) => {
            let cancel = JsFuture::from(stream.cancel());
            wasm_bindgen_futures::spawn_local(async move {
                let _ = cancel.await;
            });
            None
        }
    }
}

/// The task: reads chunk after chunk while buffers are free, until `size` bytes are read or
/// the [`FileRead`] is dropped.
async fn read(
    blob: &Blob,
    size: u64,
    chunk: u32,
    by: ReadBy,
    mut free: mpsc::UnboundedReceiver<Option<ArrayBuffer>>,
    out: &mpsc::UnboundedSender<Result<Uint8Array, NodeError>>,
) -> Result<(), NodeError> {
    let reader = match by {
        ReadBy::Stream => byob_reader(blob),
        ReadBy::Slices => None,
    };
    // No buffer longer than the file: a small file takes a small one.
    let capacity = u64::from(chunk).min(size) as u32;
    let mut at = 0u64;
    while at < size {
        let Some(buffer) = free.next().await else { break };
        // Below `chunk`, so it fits in a u32.
        let want = u64::from(chunk).min(size - at) as u32;
        let bytes = match &reader {
            Some(Reader(reader)) => fill(reader, buffer, capacity, want).await?,
            None => {
                let end = at + u64::from(want);
                let slice =
                    blob.slice_with_f64_and_f64(at as f64, end as f64).map_err(unreadable)?;
                let read = JsFuture::from(slice.array_buffer()).await.map_err(unreadable)?;
                Uint8Array::new(&read)
            }
        };
        if bytes.length() != want {
            let read = at + u64::from(bytes.length());
            return Err(NodeError::FileUnreadable {
                detail: format!(
                    "the file ended after {read} of its {size} bytes: was it changed since it \
                     was chosen?"
                ),
            });
        }
        at += u64::from(want);
        if out.unbounded_send(Ok(bytes)).is_err() {
            break;
        }
    }
    Ok(())
}

/// Reads the stream's next `want` bytes into `buffer` (or a new buffer of `capacity` bytes),
/// as many reads as it takes; fewer only where the stream ends first.
async fn fill(
    reader: &ReadableStreamByobReader,
    buffer: Option<ArrayBuffer>,
    capacity: u32,
    want: u32,
) -> Result<Uint8Array, NodeError> {
    let mut buffer = buffer.filter(|b| b.byte_length() >= want).unwrap_or_else(|| {
        #[cfg(test)]
        tests::ALLOCATED.with(|n| n.set(n.get() + 1));
        ArrayBuffer::new(capacity)
    });
    let mut filled = 0;
    while filled < want {
        // Each read takes the buffer over and hands it back inside its result.
        let view = Uint8Array::new_with_byte_offset_and_length(&buffer, filled, want - filled);
        let result =
            JsFuture::from(reader.read_with_array_buffer_view(&view)).await.map_err(unreadable)?;
        #[cfg(test)]
        tests::READS.with(|n| n.set(n.get() + 1));
        let field = |name: &str| Reflect::get(&result, &name.into()).unwrap_or(JsValue::UNDEFINED);
        let done = field("done").as_bool().unwrap_or(true);
        // Only a cancelled stream gives no buffer back, and the file's stream is ours alone.
        let value =
            field("value").dyn_into::<Uint8Array>().map_err(|_| NodeError::FileUnreadable {
                detail: "the file's stream was closed while it was read".into(),
            })?;
        if value.length() == 0 && !done {
            return Err(NodeError::FileUnreadable {
                detail: "the file's stream gave nothing".into(),
            });
        }
        buffer = value.buffer();
        filled += value.length();
        if done {
            break;
        }
    }
    Ok(Uint8Array::new_with_byte_offset_and_length(&buffer, 0, filled))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use js_sys::Array;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    thread_local! {
        /// Buffers the stream reads have allocated on this thread.
        pub(super) static ALLOCATED: Cell<usize> = const { Cell::new(0) };
        /// Reads of the stream on this thread.
        pub(super) static READS: Cell<usize> = const { Cell::new(0) };
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    fn blob_of(data: &[u8]) -> Blob {
        // In 1000-byte parts, so that chunks cross the parts' boundaries.
        let parts: Array = data.chunks(1000).map(Uint8Array::from).collect();
        Blob::new_with_u8_array_sequence(&parts).unwrap()
    }

    /// Reads `blob` to its end through a `FileRead`, giving every chunk back; returns the bytes,
    /// the chunk lengths and the number of buffers the stream's reads allocated.
    async fn read_all(
        blob: &Blob,
        size: u64,
        chunk: u32,
        by: ReadBy,
    ) -> Result<(Vec<u8>, Vec<u32>, usize), NodeError> {
        let before = ALLOCATED.with(Cell::get);
        let mut read = FileRead::start(blob, size, chunk, by);
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        while let Some(c) = read.next().await? {
            out.extend(c.to_vec());
            lens.push(c.length());
            read.give_back();
        }
        Ok((out, lens, ALLOCATED.with(Cell::get) - before))
    }

    /// Every byte comes, in order, in chunks of the size asked (the last one shorter), for
    /// files shorter than, as long as and longer than a chunk, read either way; the stream's
    /// reads reuse at most READS_AHEAD + 1 buffers however long the file.
    #[wasm_bindgen_test]
    async fn reads_every_byte_in_order_in_chunks() {
        let chunk = 4096u32;
        for len in [0usize, 1, 4095, 4096, 4097, 14_000, 100_000] {
            let data = bytes(len);
            let blob = blob_of(&data);
            for by in [ReadBy::Stream, ReadBy::Slices] {
                let (read, lens, buffers) = read_all(&blob, len as u64, chunk, by).await.unwrap();
                assert!(read == data, "{len} bytes by {by:?}: the bytes differ");
                let mut expected = vec![chunk; len / chunk as usize];
                if len % chunk as usize != 0 {
                    expected.push((len % chunk as usize) as u32);
                }
                assert_eq!(lens, expected, "{len} bytes by {by:?}: chunk lengths");
                // The stream's reads allocate a buffer for each of the first chunks, then
                // reuse those given back; slices allocate none of their own.
                let allocated =
                    if by == ReadBy::Stream { lens.len().min(READS_AHEAD + 1) } else { 0 };
                assert_eq!(buffers, allocated, "{len} bytes by {by:?}: buffers allocated");
            }
        }
    }

    /// A file shorter than the size recorded for it (a file changed on disk since it was
    /// chosen) is a typed error, whichever way it is read; a longer one is read up to the
    /// size.
    #[wasm_bindgen_test]
    async fn a_file_shorter_than_its_size_is_unreadable() {
        let data = bytes(10_000);
        let blob = blob_of(&data);
        for by in [ReadBy::Stream, ReadBy::Slices] {
            let err = read_all(&blob, 12_000, 4096, by).await.unwrap_err();
            assert!(
                matches!(&err, NodeError::FileUnreadable { detail } if detail.contains("after 10000 of its 12000 bytes")),
                "{by:?}: {err:?}"
            );
            let (read, _, _) = read_all(&blob, 5000, 4096, by).await.unwrap();
            assert!(read == data[..5000], "{by:?}: the first 5000 bytes");
        }
    }

    /// The task holds at most READS_AHEAD + 1 chunks: with one lent and none given back, it
    /// reads READS_AHEAD more and stops there.
    #[wasm_bindgen_test]
    async fn reads_stay_at_most_a_few_chunks_ahead() {
        let data = bytes(64 * 1024);
        let blob = blob_of(&data);
        let mut read = FileRead::start(&blob, data.len() as u64, 1024, ReadBy::Stream);
        let first = read.next().await.unwrap().unwrap();
        assert!(first.to_vec() == data[..1024], "the first chunk");
        // Give the task time to read further, if it would.
        futures_timer::Delay::new(std::time::Duration::from_millis(50)).await;
        let mut ready = 0;
        while let Some(Some(chunk)) = futures::FutureExt::now_or_never(read.chunks.next()) {
            let at = 1024 * (ready + 1);
            assert!(chunk.unwrap().to_vec() == data[at..at + 1024], "chunk {}", ready + 1);
            ready += 1;
        }
        assert_eq!(ready, READS_AHEAD, "chunks read with one lent and none given back");
    }

    /// A byte stream that answers each read with at most the next of `pieces`, then closes.
    fn stream_of(pieces: &[&[u8]]) -> web_sys::ReadableStream {
        let make = js_sys::Function::new_with_args(
            "pieces",
            "let i = 0;
             return new ReadableStream({ type: 'bytes', pull(c) {
               const r = c.byobRequest;
               if (i >= pieces.length) { c.close(); r.respond(0); return; }
               const p = pieces[i++], n = Math.min(p.length, r.view.byteLength);
               r.view.set(p.subarray(0, n));
               if (n < p.length) pieces.splice(i, 0, p.subarray(n));
               r.respond(n);
             } });",
        );
        let pieces: Array = pieces.iter().map(|p| Uint8Array::from(*p)).collect();
        make.call1(&JsValue::NULL, &pieces).unwrap().unchecked_into()
    }

    /// A chunk is filled from as many reads as the stream takes to give it, pieces of any
    /// size, into the buffer given back; where the stream ends first, what it gave comes back
    /// short (the end of a file shorter than its size).
    #[wasm_bindgen_test]
    async fn a_chunk_is_filled_from_many_short_reads() {
        let data = bytes(10_000);
        let cuts = [0, 1, 8, 1000, 1003, 4095, 4100, 9000, 10_000];
        let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        let reader = ReadableStreamByobReader::new(&stream_of(&pieces)).unwrap();
        let reads = READS.with(Cell::get);
        let first = fill(&reader, None, 4096, 4096).await.unwrap();
        assert!(first.to_vec() == data[..4096], "the first chunk");
        // Pieces of 1, 7, 992, 3, 3092 bytes, and 1 of the next.
        assert_eq!(READS.with(Cell::get) - reads, 6, "reads for the first chunk");
        let second = fill(&reader, Some(first.buffer()), 4096, 4096).await.unwrap();
        assert!(second.to_vec() == data[4096..8192], "the second chunk");
        let third = fill(&reader, Some(second.buffer()), 4096, 4096).await.unwrap();
        assert!(third.to_vec() == data[8192..], "the stream's last bytes, short");
        assert_eq!(third.buffer().byte_length(), 4096, "the same buffer, read into again");
    }
}
