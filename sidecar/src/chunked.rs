//! The chunked transfer coding (RFC 9112 §7.1), read incrementally: a [`ChunkedScanner`] tells where the data,
//! the framing and the end of a chunked body are in bytes as they arrive, so a body can be passed on verbatim
//! (the HTTP/1.1 path forwards it as is, trailers included) or decoded ([`ChunkedDecoder`]).

use bytes::{Buf, Bytes, BytesMut};

/// The chunked coding is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked encoding")]
pub struct BadChunk;

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the size line (hex digits, then extensions up to CRLF).
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// Expecting the LF of the size line.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// Reading trailer lines; `empty` when the current line has no byte yet.
    Trailer {
        empty: bool,
        cr: bool,
    },
    Done,
}

const START: State = State::Size {
    size: 0,
    digits: 0,
    ext: false,
};

/// What the next bytes of a chunked body are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of framing (size lines, CRLFs, trailers).
    Framing(usize),
    /// This many bytes of data.
    Data(usize),
    /// This many bytes of framing, and with them the body ended.
    End(usize),
    /// Nothing to take from an empty input.
    NeedMore,
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkedScanner {
    state: State,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner { state: START }
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Looks at the front of `buf` and says what the next bytes are; the caller consumes them.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, BadChunk> {
        if let State::Data(left) = self.state {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = left.min(buf.len() as u64);
            self.state = if n == left {
                State::DataCr
            } else {
                State::Data(left - n)
            };
            return Ok(Step::Data(n as usize));
        }
        for (i, &b) in buf.iter().enumerate() {
            self.state = match self.state {
                State::Size {
                    size,
                    digits,
                    ext: false,
                } if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return Err(BadChunk);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size {
                        size: size * 16 + d,
                        digits: digits + 1,
                        ext: false,
                    }
                }
                State::Size { digits: 0, .. } => return Err(BadChunk),
                State::Size { size, .. } if b == b'\r' => State::SizeLf { size },
                State::Size { size, digits, .. } if b == b';' || b == b' ' || b == b'\t' => State::Size {
                    size,
                    digits,
                    ext: true,
                },
                State::Size { ext: true, .. } if b != b'\n' => self.state,
                State::Size { .. } => return Err(BadChunk),
                State::SizeLf { size: 0 } if b == b'\n' => State::Trailer {
                    empty: true,
                    cr: false,
                },
                State::SizeLf { size } if b == b'\n' => {
                    self.state = State::Data(size);
                    return Ok(Step::Framing(i + 1));
                }
                State::SizeLf { .. } => return Err(BadChunk),
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => START,
                State::DataCr | State::DataLf => return Err(BadChunk),
                State::Trailer { empty, cr: false } if b == b'\r' => State::Trailer { empty, cr: true },
                State::Trailer {
                    empty: true,
                    cr: true,
                } if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Step::End(i + 1));
                }
                State::Trailer {
                    empty: false,
                    cr: true,
                } if b == b'\n' => State::Trailer {
                    empty: true,
                    cr: false,
                },
                State::Trailer { cr: true, .. } => return Err(BadChunk),
                State::Trailer { .. } if b == b'\n' => return Err(BadChunk),
                State::Trailer { .. } => State::Trailer {
                    empty: false,
                    cr: false,
                },
                State::Data(_) | State::Done => return Err(BadChunk),
            };
        }
        Ok(if buf.is_empty() {
            Step::NeedMore
        } else {
            Step::Framing(buf.len())
        })
    }

    /// Scans as much of `buf` as belongs to the body: how many bytes that is, how many of them are data, and
    /// whether the body ended there (bytes after it belong to the next message).
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, u64, bool), BadChunk> {
        let (mut at, mut data) = (0, 0u64);
        loop {
            match self.step(&buf[at..])? {
                Step::Framing(n) => at += n,
                Step::Data(n) => {
                    at += n;
                    data += n as u64;
                }
                Step::End(n) => return Ok((at + n, data, true)),
                Step::NeedMore => return Ok((at, data, false)),
            }
        }
    }
}

/// What the chunked decoder got out of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body ended (after the last chunk and the trailers).
    End,
    /// All input consumed; more is needed.
    NeedMore,
}

/// Decodes a chunked body from bytes as they arrive.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    scanner: ChunkedScanner,
}

impl ChunkedDecoder {
    /// Decodes from the front of `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BadChunk> {
        loop {
            match self.scanner.step(buf)? {
                Step::Framing(n) => buf.advance(n),
                Step::Data(n) => return Ok(Decoded::Data(buf.split_to(n).freeze())),
                Step::End(n) => {
                    buf.advance(n);
                    return Ok(Decoded::End);
                }
                Step::NeedMore => return Ok(Decoded::NeedMore),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[&[u8]]) -> Result<(Vec<u8>, bool), BadChunk> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End => return Ok((out, true)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_decoding() {
        let whole = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(
            decode_all(&[whole]).unwrap(),
            (b"hello 0123456789".to_vec(), true)
        );
        // Byte by byte.
        let pieces: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(decode_all(&pieces).unwrap(), (b"hello 0123456789".to_vec(), true));
        // Upper-case hex, trailers.
        assert_eq!(
            decode_all(&[b"1F\r\n", &[b'x'; 31], b"\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n"]).unwrap(),
            (vec![b'x'; 31], true)
        );
        // Incomplete: no terminal chunk yet.
        assert_eq!(decode_all(&[b"3\r\nabc\r\n"]).unwrap(), (b"abc".to_vec(), false));
        // Bytes after the end stay in the buffer.
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Decoded::End);
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn chunked_rejects_malformed() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r0",
            b"ffffffffffffffffff\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert!(decode_all(&[bad]).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn scanning_finds_the_end_and_counts_data_in_any_split() {
        let body = b"5\r\nhello\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let (a, da, done_a) = s.scan(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            if done_a {
                assert_eq!(da, 8);
                continue;
            }
            let (b, db, done_b) = s.scan(&body[a..]).unwrap();
            assert!(done_b, "split at {split}");
            assert_eq!(a + b, end, "split at {split}");
            assert_eq!(da + db, 8, "split at {split}");
            assert!(s.is_done());
        }
    }
}
