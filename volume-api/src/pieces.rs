//! A block's bytes as the pieces they arrived in.
//!
//! A ReadRecord answer of a 4 MiB block comes in HTTP/2 frames of up to 1 MiB
//! ([`crate::FRAME_MAX_BYTES`]), each its own buffer. Assembling them into one buffer cost
//! a copy of every byte a get returns (11.5% of a frontend's CPU serving 4 MiB gets at 32
//! clients, `perf record`). A get hands the frames' payload bytes on as they are instead:
//! a list of shared buffers, written to the client one after another (a socket write of a
//! list, no copy). A caller that needs the bytes in one buffer asks
//! [`Pieces::to_bytes`], which copies only when there is more than one piece.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Bytes in order, held as shared buffers (none empty).
#[derive(Clone, Default)]
pub struct Pieces {
    parts: Vec<Bytes>,
    len: usize,
}

impl Pieces {
    /// The bytes of `parts`, in order (empty ones dropped).
    pub fn from_parts(parts: Vec<Bytes>) -> Pieces {
        let parts: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        Pieces { parts, len }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The pieces, in order.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// Each piece replaced by `f(piece)`, which must keep its bytes (wrapping them in an
    /// owner that holds something until they are dropped, say).
    pub fn map_parts(self, f: impl FnMut(Bytes) -> Bytes) -> Pieces {
        let parts: Vec<Bytes> = self.parts.into_iter().map(f).collect();
        let len = parts.iter().map(Bytes::len).sum();
        Pieces { parts, len }
    }

    /// The bytes in `range` (sharing the buffers); `None` when it is not within them.
    pub fn slice(&self, range: Range<usize>) -> Option<Pieces> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        let mut parts = Vec::new();
        let mut at = 0usize;
        for p in &self.parts {
            let (start, end) = (at, at + p.len());
            at = end;
            if end <= range.start {
                continue;
            }
            if start >= range.end {
                break;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            parts.push(p.slice(from..to));
        }
        Some(Pieces { parts, len: range.end - range.start })
    }

    /// The bytes in one buffer: shared when there is one piece, else copied.
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in many {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Pieces {
        Pieces::from_parts(vec![bytes])
    }
}

impl fmt::Debug for Pieces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pieces({} bytes in {} pieces)", self.len, self.parts.len())
    }
}

/// Whether `pieces` holds exactly `bytes`.
fn same(pieces: &Pieces, bytes: &[u8]) -> bool {
    if pieces.len != bytes.len() {
        return false;
    }
    let mut at = 0;
    pieces.parts.iter().all(|p| {
        let same = bytes[at..at + p.len()] == p[..];
        at += p.len();
        same
    })
}

impl PartialEq for Pieces {
    fn eq(&self, other: &Pieces) -> bool {
        self.len == other.len && same(self, &other.to_bytes())
    }
}

impl PartialEq<[u8]> for Pieces {
    fn eq(&self, other: &[u8]) -> bool {
        same(self, other)
    }
}

impl PartialEq<Bytes> for Pieces {
    fn eq(&self, other: &Bytes) -> bool {
        same(self, other)
    }
}

impl PartialEq<Vec<u8>> for Pieces {
    fn eq(&self, other: &Vec<u8>) -> bool {
        same(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Pieces) {
        let all: Vec<u8> = (0..100u8).collect();
        let parts = vec![
            Bytes::copy_from_slice(&all[..10]),
            Bytes::new(),
            Bytes::copy_from_slice(&all[10..55]),
            Bytes::copy_from_slice(&all[55..]),
        ];
        (all, Pieces::from_parts(parts))
    }

    #[test]
    fn slices_and_joins_give_the_bytes_in_order() {
        let (all, p) = sample();
        assert_eq!(p.len(), 100);
        assert_eq!(p.parts().len(), 3, "the empty piece is dropped");
        assert_eq!(p.to_bytes(), all);
        assert!(p == all);
        for (from, to) in [(0, 0), (0, 100), (5, 10), (10, 55), (9, 56), (54, 55), (99, 100), (3, 97)] {
            let s = p.slice(from..to).expect("within");
            assert_eq!(s.len(), to - from);
            assert_eq!(s.to_bytes(), all[from..to], "{from}..{to}");
            assert!(s.parts().iter().all(|b| !b.is_empty()), "{from}..{to} has an empty piece");
        }
        assert!(p.slice(0..101).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = p.slice(5..4);
        assert!(backwards.is_none());
    }

    #[test]
    fn one_piece_is_shared_not_copied() {
        let b = Bytes::from(vec![7u8; 1000]);
        let p = Pieces::from(b.clone());
        assert_eq!(p.to_bytes().as_ptr(), b.as_ptr());
        assert!(Pieces::default().to_bytes().is_empty());
    }

    #[test]
    fn other_bytes_are_not_equal() {
        let (mut all, p) = sample();
        all[60] ^= 1;
        assert!(p != all);
        assert!(p != all[..99].to_vec());
        let (all, _) = sample();
        let q = Pieces::from(Bytes::from(all));
        assert_eq!(p, q);
    }
}
