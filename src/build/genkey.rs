//! Signing keys: RSA-2048 self-signed certificates (as `mkosi genkey`) and certificates issued
//! under a CA (for the kernel's secondary keyring).

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::image::certs::KeyError;

/// Who signs a new certificate: itself, or a CA.
pub enum Issuer<'a> {
    SelfSigned,
    Ca {
        key: &'a PKey<Private>,
        cert: &'a X509,
    },
}

/// A new RSA-2048 key and a certificate for it, valid `days` days from now.
pub fn generate(cn: &str, days: u32, issuer: Issuer) -> Result<(PKey<Private>, X509), KeyError> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(&key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let (sign_key, is_ca) = match issuer {
        Issuer::SelfSigned => {
            b.set_issuer_name(&name)?;
            (&key, true)
        }
        Issuer::Ca { key: ca_key, cert } => {
            b.set_issuer_name(cert.subject_name())?;
            let aki = AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&b.x509v3_context(Some(cert), None))?;
            b.append_extension(aki)?;
            (ca_key, false)
        }
    };
    let mut bc = BasicConstraints::new();
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if is_ca {
        bc.ca();
        ku.key_cert_sign();
    }
    b.append_extension(bc.critical().build()?)?;
    b.append_extension(ku.build()?)?;
    b.sign(sign_key, MessageDigest::sha256())?;
    Ok((key, b.build()))
}

/// Shorthand for a self-signed key pair.
pub fn self_signed(cn: &str, days: u32) -> Result<(PKey<Private>, X509), KeyError> {
    generate(cn, days, Issuer::SelfSigned)
}

fn random_serial() -> Result<Asn1Integer, KeyError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::signature;
    use crate::image::certs;

    #[test]
    fn ca_issues_verifiable_cert() {
        let (ca_key, ca) = self_signed("ca", 10).unwrap();
        let (_, leaf) = generate(
            "leaf",
            10,
            Issuer::Ca {
                key: &ca_key,
                cert: &ca,
            },
        )
        .unwrap();
        assert!(leaf.verify(&ca.public_key().unwrap()).unwrap());
        assert!(ca.verify(&ca.public_key().unwrap()).unwrap());
        assert_eq!(
            leaf.issuer_name().to_der().unwrap(),
            ca.subject_name().to_der().unwrap()
        );
    }

    #[test]
    fn load_pair_detects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, c1) = self_signed("a", 1).unwrap();
        let (_, c2) = self_signed("b", 1).unwrap();
        let kp = dir.path().join("k.pem");
        std::fs::write(&kp, k1.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(dir.path().join("c1.pem"), c1.to_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("c2.der"), c2.to_der().unwrap()).unwrap();
        certs::load_pair(&kp, &dir.path().join("c1.pem")).unwrap();
        assert!(matches!(
            certs::load_pair(&kp, &dir.path().join("c2.der")),
            Err(KeyError::Mismatch { .. })
        ));
        assert!(matches!(
            certs::load_key(&dir.path().join("nope")),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn signature_sign_verify_and_reject() {
        let (key, cert) = self_signed("test", 1).unwrap();
        let (_, other) = self_signed("other", 1).unwrap();
        let rh = "0123".repeat(16);
        let sig = signature::sign(&rh, &key, &cert).unwrap();
        let signer = signature::verify(&sig, &rh, &[other.clone(), cert.clone()]).unwrap();
        assert_eq!(
            signature::fingerprint(&signer).unwrap(),
            signature::fingerprint(&cert).unwrap()
        );
        assert_eq!(signature::subject(&signer), "CN=test");
        // Deterministic: RSA PKCS#1 v1.5 without attributes.
        assert_eq!(sig, signature::sign(&rh, &key, &cert).unwrap());
        assert!(signature::verify(&sig, &"4567".repeat(16), &[cert]).is_err());
        assert!(signature::verify(&sig, &rh, &[other]).is_err());
        assert!(signature::verify(b"junk", &rh, &[]).is_err());
    }
}
