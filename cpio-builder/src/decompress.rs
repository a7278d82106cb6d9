//! The compressed members the reader accepts, a zstd frame or a gzip member, recognised by
//! magic and decompressed as a stream of exactly one frame or member, capped in output size.

use std::fmt;
use std::io::{self, BufRead, Read};

const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];

/// A compression format recognised by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    pub(crate) fn detect(bytes: &[u8]) -> Option<Codec> {
        if bytes.starts_with(ZSTD_MAGIC) {
            Some(Codec::Zstd)
        } else if bytes.starts_with(GZIP_MAGIC) {
            Some(Codec::Gzip)
        } else {
            None
        }
    }

    /// A reader of the content of the one frame or member at the start of `input`, taking no
    /// input beyond it; it fails with an error for which [`is_too_large`] holds once more than
    /// `limit` bytes come out.
    pub(crate) fn decoder<'a>(
        self,
        input: impl BufRead + 'a,
        limit: u64,
    ) -> io::Result<impl Read + 'a> {
        let inner: Box<dyn Read + 'a> = match self {
            Codec::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(input)?.single_frame())
            }
            Codec::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
        };
        Ok(Capped { inner, left: limit })
    }
}

/// Whether a decoder failed by exceeding its limit.
pub(crate) fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<TooLarge>())
}

/// The marker error of [`Capped`].
#[derive(Debug)]
struct TooLarge;

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("decompressed size limit exceeded")
    }
}

impl std::error::Error for TooLarge {}

/// A reader that fails with [`TooLarge`] once more than `left` bytes come out of `inner`.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other(TooLarge))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn decompress(codec: Codec, input: &mut &[u8], limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        codec.decoder(input, limit)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn detects_by_magic() {
        assert_eq!(
            Codec::detect(&zstd::encode_all(&b"x"[..], 3).unwrap()),
            Some(Codec::Zstd)
        );
        assert_eq!(Codec::detect(&gzip(b"x")), Some(Codec::Gzip));
        assert_eq!(Codec::detect(b"070701"), None);
        assert_eq!(Codec::detect(&[0x28, 0xB5, 0x2F]), None);
    }

    #[test]
    fn consumes_exactly_one_frame_or_member() {
        for (codec, first, second) in [
            (
                Codec::Zstd,
                zstd::encode_all(&b"first"[..], 3).unwrap(),
                zstd::encode_all(&b"second"[..], 3).unwrap(),
            ),
            (Codec::Gzip, gzip(b"first"), gzip(b"second")),
        ] {
            let input = [first.clone(), second, vec![0; 7]].concat();
            let mut rest = &input[..];
            assert_eq!(decompress(codec, &mut rest, 100).unwrap(), b"first");
            assert_eq!(input.len() - rest.len(), first.len(), "{codec:?}");
            assert_eq!(decompress(codec, &mut rest, 100).unwrap(), b"second");
        }
    }

    #[test]
    fn caps_output_and_reports_corruption() {
        let big = vec![7u8; 10_000];
        for input in [zstd::encode_all(&big[..], 3).unwrap(), gzip(&big)] {
            let codec = Codec::detect(&input).unwrap();
            let err = decompress(codec, &mut &input[..], 9_999).unwrap_err();
            assert!(is_too_large(&err), "{err}");
            assert_eq!(decompress(codec, &mut &input[..], 10_000).unwrap(), big);
            let cut = &input[..input.len() - 3];
            let err = decompress(codec, &mut &cut[..], 10_000).unwrap_err();
            assert!(!is_too_large(&err), "{err}");
        }
    }
}
