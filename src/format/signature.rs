//! The verity signature partition: compact JSON carrying the root hash, the signer's
//! certificate fingerprint and a detached PKCS#7 over the lowercase hex root hash.

use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

use crate::format::hex;

/// Size of the signature partition we write (the JSON, NUL-padded).
pub const PARTITION_SIZE: usize = 16 * 1024;
/// Readers refuse larger signature partitions (as systemd does).
pub const MAX_SIZE: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signature partition: {0} bytes exceed the 4 MiB limit")]
    TooLarge(u64),
    #[error("signature partition: non-NUL byte at offset {0} after the JSON's terminating NUL")]
    TrailingData(usize),
    #[error("signature partition: invalid JSON: {0}")]
    Json(String),
    #[error("signature partition: field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("signature JSON of {size} bytes does not fit the {PARTITION_SIZE}-byte partition")]
    DoesNotFit { size: usize },
    #[error("PKCS#7 signature does not verify over root hash {root_hash} with the given certificates: {reason}")]
    Invalid { root_hash: String, reason: String },
    #[error("{what}: {source}")]
    OpenSsl {
        what: &'static str,
        source: openssl::error::ErrorStack,
    },
}

fn ossl(what: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> SignatureError {
    move |source| SignatureError::OpenSsl { what, source }
}

/// The decoded JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureJson {
    /// Lowercase hex root hash, as it was signed.
    pub root_hash: String,
    pub certificate_fingerprint: Option<String>,
    /// DER PKCS#7.
    pub signature: Vec<u8>,
}

impl SignatureJson {
    /// Compact JSON, NUL-padded to [`PARTITION_SIZE`].
    pub fn encode(&self) -> Result<Vec<u8>, SignatureError> {
        // Written by hand to keep systemd-repart's key order; every value is hex or base64.
        let fp = self
            .certificate_fingerprint
            .as_ref()
            .map(|fp| format!(",\"certificateFingerprint\":\"{fp}\""))
            .unwrap_or_default();
        let mut out = format!(
            "{{\"rootHash\":\"{}\"{fp},\"signature\":\"{}\"}}",
            self.root_hash,
            openssl::base64::encode_block(&self.signature)
        )
        .into_bytes();
        if out.len() >= PARTITION_SIZE {
            return Err(SignatureError::DoesNotFit { size: out.len() });
        }
        out.resize(PARTITION_SIZE, 0);
        Ok(out)
    }

    /// Parses a signature partition's bytes (JSON, then only NULs).
    pub fn parse(bytes: &[u8]) -> Result<SignatureJson, SignatureError> {
        if bytes.len() as u64 > MAX_SIZE {
            return Err(SignatureError::TooLarge(bytes.len() as u64));
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        if let Some(off) = bytes[end..].iter().position(|&b| b != 0) {
            return Err(SignatureError::TrailingData(end + off));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes[..end])
            .map_err(|e| SignatureError::Json(e.to_string()))?;
        check_unique_keys(&bytes[..end])?;
        let field = |name: &'static str| value.get(name).and_then(|v| v.as_str());
        let missing = |field| SignatureError::Field {
            field,
            reason: "missing or not a string".into(),
        };
        let root_hash = field("rootHash").ok_or_else(|| missing("rootHash"))?;
        check_hex("rootHash", root_hash)?;
        let signature = field("signature").ok_or_else(|| missing("signature"))?;
        let signature =
            crate::format::base64::decode(signature).map_err(|_| SignatureError::Field {
                field: "signature",
                reason: "not valid base64".into(),
            })?;
        // Hex like the root hash: measured boot puts it into a `:`-separated event.
        let fingerprint = field("certificateFingerprint");
        if let Some(fp) = fingerprint {
            check_hex("certificateFingerprint", fp)?;
        }
        Ok(SignatureJson {
            root_hash: root_hash.to_owned(),
            certificate_fingerprint: fingerprint.map(str::to_owned),
            signature,
        })
    }
}

/// Refuses an object holding a key twice, at any depth: serde_json keeps the last value, a
/// different reader may keep the first. `json` is valid JSON (serde_json has parsed it); keys
/// are compared decoded, so `"root\u0048ash"` is `"rootHash"`.
fn check_unique_keys(json: &[u8]) -> Result<(), SignatureError> {
    use std::collections::HashSet;
    // One entry per open container: the keys seen, for an object; None for an array.
    let mut open: Vec<Option<HashSet<String>>> = Vec::new();
    let mut key_next = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'{' => {
                open.push(Some(HashSet::new()));
                key_next = true;
            }
            b'[' => open.push(None),
            b'}' | b']' => {
                open.pop();
            }
            b',' => key_next = matches!(open.last(), Some(Some(_))),
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                let literal = json.get(start..=i).unwrap_or_default();
                if let (true, Some(Some(keys))) = (key_next, open.last_mut()) {
                    let key: String = serde_json::from_slice(literal)
                        .map_err(|e| SignatureError::Json(e.to_string()))?;
                    if !keys.insert(key.clone()) {
                        return Err(SignatureError::Json(format!("duplicate key {key:?}")));
                    }
                }
                key_next = false;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn check_hex(field: &'static str, s: &str) -> Result<(), SignatureError> {
    let ok = !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Field {
            field,
            reason: format!("{s:?} is not a hex string"),
        })
    }
}

/// sha256 of the certificate's DER, lowercase hex.
pub fn fingerprint(cert: &X509) -> Result<String, SignatureError> {
    let d = cert
        .digest(MessageDigest::sha256())
        .map_err(ossl("certificate fingerprint"))?;
    Ok(hex::encode(&d))
}

fn flags() -> Pkcs7Flags {
    // NOATTR: the kernel rejects PKCS#7 with an smimeCapabilities attribute.
    Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOATTR | Pkcs7Flags::NOCERTS
}

/// Detached PKCS#7 (DER) over the lowercase hex root hash string.
pub fn sign(root_hash: &str, key: &PKey<Private>, cert: &X509) -> Result<Vec<u8>, SignatureError> {
    let certs = Stack::new().map_err(ossl("PKCS#7 signing"))?;
    let p7 = Pkcs7::sign(cert, key, &certs, root_hash.as_bytes(), flags())
        .map_err(ossl("PKCS#7 signing"))?;
    p7.to_der().map_err(ossl("PKCS#7 encoding"))
}

/// Verifies a detached PKCS#7 over `root_hash` against `certs` only (certificates embedded in
/// the signature are ignored; no chain), returning the signer.
pub fn verify(der: &[u8], root_hash: &str, certs: &[X509]) -> Result<X509, SignatureError> {
    let invalid = |reason: String| SignatureError::Invalid {
        root_hash: root_hash.to_owned(),
        reason,
    };
    let p7 = Pkcs7::from_der(der).map_err(|e| invalid(format!("not a DER PKCS#7: {e}")))?;
    let mut stack = Stack::new().map_err(ossl("certificate stack"))?;
    for c in certs {
        stack.push(c.clone()).map_err(ossl("certificate stack"))?;
    }
    let store = X509StoreBuilder::new().map_err(ossl("X509 store"))?.build();
    let vflags = Pkcs7Flags::NOINTERN | Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY;
    p7.verify(&stack, &store, Some(root_hash.as_bytes()), None, vflags)
        .map_err(|e| invalid(e.to_string()))?;
    // OpenSSL does not look at these; the kernel refuses what it does not know (-ENOPKG).
    kernel_algorithms(der).map_err(|what| invalid(format!("{what}, which the kernel refuses")))?;
    let signers = p7
        .signers(&stack, vflags)
        .map_err(|e| invalid(format!("signer not found: {e}")))?;
    signers
        .iter()
        .next()
        .map(|c| c.to_owned())
        .ok_or_else(|| invalid("no signer".into()))
}

/// Digest algorithms the kernel's PKCS#7 parser knows: sha1, sha224, sha256, sha384, sha512.
const DIGESTS: [&[u8]; 5] = [
    &[0x2b, 0x0e, 0x03, 0x02, 0x1a],
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04],
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
];
/// `1.2.840.113549.1.x.y` (PKCS) and `1.2.840.10045.4.x` (ECDSA) prefixes.
const PKCS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01];
const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];

/// Signature algorithms the kernel takes in a PKCS#7: rsaEncryption and sha*WithRSAEncryption
/// (PKCS#1 1, 5, 11–14), ecdsa-with-SHA1 and ecdsa-with-SHA224…512.
fn signature_algorithm_known(oid: &[u8]) -> bool {
    match (oid.strip_prefix(PKCS), oid.strip_prefix(ECDSA)) {
        (Some([0x01, n]), _) => matches!(n, 0x01 | 0x05 | 0x0b..=0x0e),
        (_, Some([0x01])) => true,
        (_, Some([0x03, n])) => (1..=4).contains(n),
        _ => false,
    }
}

/// One DER element with tag `tag` at the start of `b`: its contents and what follows.
fn der(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = match first {
        0..=0x7f => (usize::from(first), b),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let len = b.get(..n)?.iter().fold(0, |a, &x| a << 8 | usize::from(x));
            (len, &b[n..])
        }
        _ => return None,
    };
    (t == tag && b.len() >= len).then(|| (&b[..len], &b[len..]))
}

/// The kinds and algorithms of a SignedData PKCS#7 that OpenSSL's verify does not check:
/// content types signedData and data, the first signer's digest and signature algorithms.
fn kernel_algorithms(p7: &[u8]) -> Result<(), &'static str> {
    const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    let malformed = "the PKCS#7 structure is malformed";
    let (info, _) = der(p7, 0x30).ok_or(malformed)?;
    let (kind, rest) = der(info, 0x06).ok_or(malformed)?;
    let (explicit, _) = der(rest, 0xa0).ok_or(malformed)?;
    let (signed, _) = der(explicit, 0x30).ok_or(malformed)?;
    let (_, rest) = der(signed, 0x02).ok_or(malformed)?;
    let (_, rest) = der(rest, 0x31).ok_or(malformed)?;
    let (content, mut rest) = der(rest, 0x30).ok_or(malformed)?;
    let (content_kind, _) = der(content, 0x06).ok_or(malformed)?;
    if kind != SIGNED_DATA || content_kind != DATA {
        return Err("the PKCS#7 is not signedData over data");
    }
    // Certificates [0] and CRLs [1] may come before the signer infos.
    for tag in [0xa0, 0xa1] {
        if let Some((_, r)) = der(rest, tag) {
            rest = r;
        }
    }
    let (signers, _) = der(rest, 0x31).ok_or(malformed)?;
    let (signer, _) = der(signers, 0x30).ok_or(malformed)?;
    let (_, rest) = der(signer, 0x02).ok_or(malformed)?;
    let sid = der(rest, 0x30).or_else(|| der(rest, 0x80));
    let (_, rest) = sid.ok_or(malformed)?;
    let (digest, mut rest) = der(rest, 0x30).ok_or(malformed)?;
    if let Some((_, r)) = der(rest, 0xa0) {
        rest = r;
    }
    let (signature, _) = der(rest, 0x30).ok_or(malformed)?;
    let oid = |alg| der(alg, 0x06).map(|(oid, _)| oid).ok_or(malformed);
    if !DIGESTS.contains(&oid(digest)?) {
        return Err("the signer's digest algorithm is unknown");
    }
    if !signature_algorithm_known(oid(signature)?) {
        return Err("the signer's signature algorithm is unknown");
    }
    Ok(())
}

/// The signer's subject as `CN=…, O=…`.
pub fn subject(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_strictness() {
        let j = SignatureJson {
            root_hash: "ab".repeat(32),
            certificate_fingerprint: Some("cd".repeat(32)),
            signature: vec![1, 2, 3],
        };
        let bytes = j.encode().unwrap();
        assert_eq!(bytes.len(), PARTITION_SIZE);
        assert!(bytes.starts_with(b"{\"rootHash\":\"abab"));
        assert_eq!(SignatureJson::parse(&bytes).unwrap(), j);
        let mut bad = bytes.clone();
        bad[PARTITION_SIZE - 1] = b'x';
        assert!(matches!(
            SignatureJson::parse(&bad),
            Err(SignatureError::TrailingData(16383))
        ));
        assert!(matches!(
            SignatureJson::parse(b"{\"rootHash\":\"zz\",\"signature\":\"\"}"),
            Err(SignatureError::Field {
                field: "rootHash",
                ..
            })
        ));
        assert!(SignatureJson::parse(b"{").is_err());
        let colon = br#"{"rootHash":"ab","certificateFingerprint":"ab:cd","signature":""}"#;
        assert!(matches!(
            SignatureJson::parse(colon),
            Err(SignatureError::Field {
                field: "certificateFingerprint",
                ..
            })
        ));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        let sig = "\"signature\":\"AQID\"";
        let good = format!("{{\"rootHash\":\"{a}\",{sig},\"x\":{{\"rootHash\":1}}}}");
        assert_eq!(SignatureJson::parse(good.as_bytes()).unwrap().root_hash, a);
        for dup in [
            format!("{{\"rootHash\":\"{a}\",{sig},\"rootHash\":\"{b}\"}}"),
            format!("{{\"rootHash\":\"{a}\",{sig},\"root\\u0048ash\":\"{b}\"}}"),
            format!("{{\"rootHash\":\"{a}\",{sig},{sig}}}"),
            format!("{{\"rootHash\":\"{a}\",{sig},\"x\":[{{\"k\":1,\"k\":2}}]}}"),
        ] {
            let err = SignatureJson::parse(dup.as_bytes()).unwrap_err();
            assert!(
                matches!(&err, SignatureError::Json(m) if m.contains("duplicate key")),
                "{dup}: {err}"
            );
        }
    }

    #[test]
    fn algorithms_the_kernel_knows() {
        for oid in [
            &PKCS_RSA[..],
            &[PKCS, &[0x01, 0x0b]].concat(),
            &[ECDSA, &[0x03, 0x02]].concat(),
        ] {
            assert!(signature_algorithm_known(oid), "{oid:x?}");
        }
        for oid in [
            &[PKCS, &[0x01, 0x7f]].concat()[..],
            &[ECDSA, &[0x03, 0x05]].concat(),
            &[],
        ] {
            assert!(!signature_algorithm_known(oid), "{oid:x?}");
        }
        assert_eq!(
            der(&[0x30, 0x01, 0xaa, 0xbb], 0x30),
            Some((&[0xaa][..], &[0xbb][..]))
        );
        assert_eq!(
            der(&[0x30, 0x81, 0x02, 1, 2], 0x30),
            Some((&[1, 2][..], &[][..]))
        );
        assert_eq!(der(&[0x30, 0x05, 1], 0x30), None, "length past the end");
        assert_eq!(der(&[0x31, 0x00], 0x30), None, "another tag");
        assert_eq!(
            kernel_algorithms(&[0x30, 0x00]),
            Err("the PKCS#7 structure is malformed")
        );
    }

    const PKCS_RSA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
}
