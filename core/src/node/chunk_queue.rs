//! An ordered queue of byte chunks that are written out without being copied together first:
//! a writer that takes vectored input (rustls's `write_vectored`) sees them as one run of bytes.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Most chunks offered to one vectored write. rustls cuts full records across the slices it
/// is given, so a few slices already fill its buffer.
const MAX_SLICES: usize = 16;

/// Chunks of bytes waiting for a writer, in order. Owns no storage while empty.
#[derive(Debug, Default)]
pub(crate) struct ChunkQueue {
    chunks: Option<VecDeque<Bytes>>,
    len: usize,
}

impl ChunkQueue {
    /// Bytes waiting.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends a chunk (an empty one is dropped).
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        self.chunks
            .get_or_insert_with(VecDeque::new)
            .push_back(chunk);
    }

    /// Offers the waiting bytes, in order, to `write` (as up to [`MAX_SLICES`] slices) until
    /// it takes none or nothing is left, and drops what it took. Returns the bytes taken.
    pub(crate) fn write_with<E>(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut total = 0;
        while let Some(chunks) = self.chunks.as_ref() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(chunks) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            let taken = write(&slices[..count])?;
            if taken == 0 {
                break;
            }
            self.advance(taken);
            total += taken;
        }
        Ok(total)
    }

    /// Drops the first `n` bytes (at most all of them).
    fn advance(&mut self, mut n: usize) {
        let Some(chunks) = self.chunks.as_mut() else {
            return;
        };
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            chunks.pop_front();
        }
        if chunks.is_empty() {
            self.chunks = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_of(chunks: &[&[u8]]) -> ChunkQueue {
        let mut queue = ChunkQueue::default();
        for chunk in chunks {
            queue.push(Bytes::copy_from_slice(chunk));
        }
        queue
    }

    /// A writer that takes at most `limit` bytes per call and records them.
    fn limited_writer(
        out: &mut Vec<u8>,
        limit: usize,
    ) -> impl FnMut(&[IoSlice<'_>]) -> Result<usize, ()> + '_ {
        move |slices| {
            let mut taken = 0;
            for slice in slices {
                let n = slice.len().min(limit - taken);
                out.extend_from_slice(&slice[..n]);
                taken += n;
                if taken == limit {
                    break;
                }
            }
            Ok(taken)
        }
    }

    #[test]
    fn writes_every_chunk_in_order_across_partial_writes() {
        let mut queue = queue_of(&[b"abc", b"", b"defgh", b"i"]);
        assert_eq!(queue.len(), 9, "the empty chunk counts nothing");
        let mut out = Vec::new();
        assert_eq!(queue.write_with(limited_writer(&mut out, 2)), Ok(9));
        assert_eq!(out, b"abcdefghi");
        assert_eq!(queue.len(), 0);
        assert!(queue.chunks.is_none(), "an emptied queue owns no storage");
    }

    #[test]
    fn keeps_what_the_writer_refused_for_the_next_write() {
        let mut queue = queue_of(&[b"abc", b"def"]);
        let mut calls = 0;
        let taken = queue.write_with(|slices| {
            calls += 1;
            Ok::<_, ()>(if calls == 1 { slices[0].len() + 1 } else { 0 })
        });
        assert_eq!(taken, Ok(4), "one chunk and one byte of the next");
        assert_eq!(queue.len(), 2);
        let mut out = Vec::new();
        assert_eq!(queue.write_with(limited_writer(&mut out, 100)), Ok(2));
        assert_eq!(out, b"ef", "the rest, from where the writer stopped");
    }

    #[test]
    fn a_writer_error_is_returned_and_loses_nothing() {
        let mut queue = queue_of(&[b"abc"]);
        assert_eq!(queue.write_with(|_| Err::<usize, _>("full")), Err("full"));
        assert_eq!(queue.len(), 3, "nothing dropped on an error");
    }

    #[test]
    fn offers_at_most_max_slices_at_once() {
        let mut queue = ChunkQueue::default();
        for i in 0..(MAX_SLICES + 5) {
            queue.push(Bytes::from(vec![i as u8]));
        }
        let mut seen = Vec::new();
        let taken = queue.write_with(|slices| {
            seen.push(slices.len());
            Ok::<_, ()>(slices.iter().map(|s| s.len()).sum())
        });
        assert_eq!(taken, Ok(MAX_SLICES + 5));
        assert_eq!(seen, vec![MAX_SLICES, 5]);
    }
}
