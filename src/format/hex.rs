//! Lowercase hex encoding and strict decoding.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid hex at character {0}")]
pub struct HexError(pub usize);

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn decode(s: &str) -> Result<Vec<u8>, HexError> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(HexError(b.len()));
    }
    let nibble = |i: usize| -> Result<u8, HexError> {
        (b[i] as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(HexError(i))
    };
    (0..b.len() / 2)
        .map(|i| Ok(nibble(2 * i)? << 4 | nibble(2 * i + 1)?))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_errors() {
        assert_eq!(super::encode(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(super::decode("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(super::decode("0g"), Err(super::HexError(1)));
        assert_eq!(super::decode("abc"), Err(super::HexError(3)));
    }
}
