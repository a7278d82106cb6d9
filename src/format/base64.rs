//! Standard base64 (RFC 4648, padded) decoding — ours, so that reading a signature partition at
//! boot does not initialise OpenSSL (tens of milliseconds under emulation).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid base64 at character {0}")]
pub struct Base64Error(pub usize);

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes padded base64; whitespace is not allowed (the signature JSON has none).
pub fn decode(s: &str) -> Result<Vec<u8>, Base64Error> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return Err(Base64Error(b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (q, chunk) in b.chunks(4).enumerate() {
        let last = (q + 1) * 4 == b.len();
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(Base64Error(q * 4 + 4 - pad));
        }
        let mut n = 0u32;
        for (i, &c) in chunk[..4 - pad].iter().enumerate() {
            n |= value(c).ok_or(Base64Error(q * 4 + i))? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl_and_rejects_junk() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0, 0xfe, 1],
        ] {
            let enc = openssl::base64::encode_block(data);
            assert_eq!(decode(&enc).unwrap(), data, "{enc}");
        }
        assert_eq!(decode("Zm9v"), Ok(b"foo".to_vec()));
        assert_eq!(decode("Zm9"), Err(Base64Error(3)));
        assert_eq!(decode("Zm=v"), Err(Base64Error(2)));
        assert_eq!(decode("Zg==Zg=="), Err(Base64Error(2)));
        assert_eq!(decode("Z!9v"), Err(Base64Error(1)));
    }
}
