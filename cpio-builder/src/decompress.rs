//! Decompression of one zstd frame or one gzip member from the front of a buffer, capped in
//! output size, reporting how many input bytes it consumed.

use std::io::{self, Read};

const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];

/// A compression format recognised by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Zstd,
    Gzip,
}

/// Why a member could not be decompressed.
pub(crate) enum Failure {
    Corrupt(io::Error),
    /// The output would exceed the limit.
    TooLarge,
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Corrupt(e)
    }
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

    /// Decompresses the frame or member at the start of `input`: returns its content
    /// (at most `limit` bytes) and the number of input bytes it took.
    pub(crate) fn decompress(self, input: &[u8], limit: u64) -> Result<(Vec<u8>, usize), Failure> {
        let (out, rest) = match self {
            Codec::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?.single_frame();
                let out = read_capped(&mut decoder, limit)?;
                (out, decoder.finish())
            }
            Codec::Gzip => {
                let mut decoder = flate2::bufread::GzDecoder::new(input);
                let out = read_capped(&mut decoder, limit)?;
                (out, decoder.into_inner())
            }
        };
        Ok((out, input.len() - rest.len()))
    }
}

fn read_capped(decoder: &mut dyn Read, limit: u64) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(Failure::TooLarge);
    }
    Ok(out)
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
            let (out, used) = codec.decompress(&input, 100).ok().unwrap();
            assert_eq!(
                (out.as_slice(), used),
                (&b"first"[..], first.len()),
                "{codec:?}"
            );
            let (out, _) = codec.decompress(&input[used..], 100).ok().unwrap();
            assert_eq!(out, b"second");
        }
    }

    #[test]
    fn caps_output_and_reports_corruption() {
        let big = vec![7u8; 10_000];
        for input in [zstd::encode_all(&big[..], 3).unwrap(), gzip(&big)] {
            let codec = Codec::detect(&input).unwrap();
            assert!(matches!(
                codec.decompress(&input, 9_999),
                Err(Failure::TooLarge)
            ));
            assert_eq!(codec.decompress(&input, 10_000).ok().unwrap().0, big);
            let cut = &input[..input.len() - 3];
            assert!(matches!(
                codec.decompress(cut, 10_000),
                Err(Failure::Corrupt(_))
            ));
        }
    }
}
