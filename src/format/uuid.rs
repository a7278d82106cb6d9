//! 128-bit UUIDs in RFC 4122 byte order (as printed), with the GPT mixed-endian on-disk form
//! and derivation from a seed (HMAC-SHA256, as systemd-repart derives its UUIDs and salts).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a UUID (expected 32 hex digits, dashes optional)")]
pub struct ParseUuidError(pub String);

impl Uuid {
    /// GPT stores the first three fields little-endian.
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let mut b = self.0;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    pub fn from_gpt_bytes(b: [u8; 16]) -> Uuid {
        // The swap is its own inverse.
        Uuid(Uuid(b).to_gpt_bytes())
    }

    /// Marks the bytes as a random (version 4, variant 1) UUID.
    pub fn as_v4(mut self) -> Uuid {
        self.0[6] = (self.0[6] & 0x0f) | 0x40;
        self.0[8] = (self.0[8] & 0x3f) | 0x80;
        self
    }

    /// A v4 UUID derived from `seed` and a purpose label: HMAC-SHA256(seed, label), first 16 bytes.
    pub fn derive(seed: &Uuid, label: &str) -> Uuid {
        let mac = hmac_sha256(&seed.0, label.as_bytes());
        Uuid(mac[..16].try_into().expect("32-byte MAC")).as_v4()
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// HMAC-SHA256 of `data` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = ParseUuidError;

    fn from_str(s: &str) -> Result<Uuid, ParseUuidError> {
        let hex: String = s.chars().filter(|&c| c != '-').collect();
        let err = || ParseUuidError(s.to_owned());
        let bytes = crate::format::hex::decode(&hex).map_err(|_| err())?;
        Ok(Uuid(bytes.try_into().map_err(|_| err())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_round_trip_and_display() {
        let u: Uuid = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709".parse().unwrap();
        assert_eq!(u.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        let g = u.to_gpt_bytes();
        assert_eq!(&g[..4], &[0xe3, 0xbc, 0x68, 0x4f]);
        assert_eq!(Uuid::from_gpt_bytes(g), u);
        assert!("4f68bce3".parse::<Uuid>().is_err());
    }

    #[test]
    fn hmac_matches_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::format::hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
