//! The TPM 2.0 wire format (TCG TPM 2.0 Library, parts 2 and 3) for the two commands boot mode
//! sends: `TPM2_GetCapability(TPM_CAP_PCRS)` for the active PCR banks and `TPM2_PCR_Extend`
//! with an empty password session, and the banks' hashes (a PCR's extension computed as the TPM
//! does, for predictions). Big-endian; responses are untrusted and checked here.

use sha2::Digest;

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const CC_PCR_EXTEND: u32 = 0x0000_0182;
const CC_GET_CAPABILITY: u32 = 0x0000_017A;
const CAP_PCRS: u32 = 0x0000_0005;
/// TPM_RS_PW: the password authorization session, here with an empty password.
const RS_PW: u32 = 0x4000_0009;
const HEADER: usize = 10;

/// A PCR bank we can hash for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bank {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Bank {
    /// Every bank we can hash for, in systemd-measure's order.
    pub const ALL: [Bank; 4] = [Bank::Sha1, Bank::Sha256, Bank::Sha384, Bank::Sha512];

    /// The bank named `name` (`sha256`, as systemd-measure also `SHA256`).
    pub fn from_name(name: &str) -> Option<Bank> {
        Bank::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }

    /// The TPM_ALG_ID of a bank we can hash for; None for others (SM3, ...).
    pub fn from_alg(alg: u16) -> Option<Bank> {
        match alg {
            0x0004 => Some(Bank::Sha1),
            0x000B => Some(Bank::Sha256),
            0x000C => Some(Bank::Sha384),
            0x000D => Some(Bank::Sha512),
            _ => None,
        }
    }

    fn alg(self) -> u16 {
        match self {
            Bank::Sha1 => 0x0004,
            Bank::Sha256 => 0x000B,
            Bank::Sha384 => 0x000C,
            Bank::Sha512 => 0x000D,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bank::Sha1 => "sha1",
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
            Bank::Sha512 => "sha512",
        }
    }

    /// The size of the bank's digests (and PCRs).
    pub fn size(self) -> usize {
        match self {
            Bank::Sha1 => 20,
            Bank::Sha256 => 32,
            Bank::Sha384 => 48,
            Bank::Sha512 => 64,
        }
    }

    /// The bank's digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }

    /// A digest in this bank, fed piece by piece.
    pub fn hasher(self) -> Hasher {
        match self {
            Bank::Sha1 => Hasher::Sha1(openssl::sha::Sha1::new()),
            Bank::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Bank::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Bank::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// The PCR value after `TPM2_PCR_Extend` of `pcr` with `digest`: the bank's hash of both.
    pub fn extend(self, pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(pcr);
        h.update(digest);
        h.finish()
    }
}

/// A running digest in one bank.
pub enum Hasher {
    Sha1(openssl::sha::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finish().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Tpm2Error {
    #[error("TPM2_{0}: response of {1} bytes is shorter than its header")]
    Short(&'static str, usize),
    #[error("TPM2_{0}: response says {1} bytes, {2} arrived")]
    Size(&'static str, u32, usize),
    #[error("TPM2_{0} failed: response code {1:#x}")]
    Code(&'static str, u32),
    #[error("TPM2_{0}: malformed response: {1}")]
    Malformed(&'static str, &'static str),
}

/// A command: header (tag, size filled in at the end, code) then `body`.
fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&((HEADER + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks a response's header (size, code) and returns its body.
fn response<'a>(name: &'static str, r: &'a [u8]) -> Result<&'a [u8], Tpm2Error> {
    if r.len() < HEADER {
        return Err(Tpm2Error::Short(name, r.len()));
    }
    let size = u32::from_be_bytes([r[2], r[3], r[4], r[5]]);
    if size as usize != r.len() {
        return Err(Tpm2Error::Size(name, size, r.len()));
    }
    match u32::from_be_bytes([r[6], r[7], r[8], r[9]]) {
        0 => Ok(&r[HEADER..]),
        code => Err(Tpm2Error::Code(name, code)),
    }
}

/// A bounds-checked big-endian reader over a response body.
struct Reader<'a> {
    name: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Tpm2Error> {
        if self.rest.len() < n {
            return Err(Tpm2Error::Malformed(self.name, "truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Tpm2Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Tpm2Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Tpm2Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// `TPM2_GetCapability(TPM_CAP_PCRS, property 0, count 1)`: the PCR allocation.
pub fn get_pcr_banks() -> Vec<u8> {
    let mut body = Vec::with_capacity(12);
    for field in [CAP_PCRS, 0, 1] {
        body.extend_from_slice(&field.to_be_bytes());
    }
    command(ST_NO_SESSIONS, CC_GET_CAPABILITY, &body)
}

/// The TPM_ALG_IDs of the active banks (a non-zero PCR select bitmap) in a
/// `TPM2_GetCapability(TPM_CAP_PCRS)` response, in the TPM's order.
pub fn parse_pcr_banks(resp: &[u8]) -> Result<Vec<u16>, Tpm2Error> {
    const NAME: &str = "GetCapability";
    let mut r = Reader {
        name: NAME,
        rest: response(NAME, resp)?,
    };
    let _more = r.u8()?;
    if r.u32()? != CAP_PCRS {
        return Err(Tpm2Error::Malformed(NAME, "not TPM_CAP_PCRS"));
    }
    let count = r.u32()?;
    let mut active = Vec::new();
    for _ in 0..count {
        let alg = r.u16()?;
        let size = r.u8()?;
        if r.take(size.into())?.iter().any(|&b| b != 0) {
            active.push(alg);
        }
    }
    Ok(active)
}

/// `TPM2_PCR_Extend(pcr, TPML_DIGEST_VALUES)` authorized by TPM_RS_PW with an empty password.
pub fn pcr_extend(pcr: u32, digests: &[(Bank, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&pcr.to_be_bytes());
    // TPMS_AUTH_COMMAND: handle, empty nonce, no attributes, empty password.
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&RS_PW.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0]);
    body.extend_from_slice(&(digests.len() as u32).to_be_bytes());
    for (bank, digest) in digests {
        body.extend_from_slice(&bank.alg().to_be_bytes());
        body.extend_from_slice(digest);
    }
    command(ST_SESSIONS, CC_PCR_EXTEND, &body)
}

/// Checks a `TPM2_PCR_Extend` response.
pub fn check_pcr_extend(resp: &[u8]) -> Result<(), Tpm2Error> {
    response("PCR_Extend", resp).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_capability_command_bytes() {
        let expected = [
            0x80, 0x01, 0, 0, 0, 22, 0, 0, 0x01, 0x7a, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        assert_eq!(get_pcr_banks(), expected);
    }

    /// swtpm's answer with sha1 and sha256 allocated, sha384 present but off.
    const CAPS: [u8; 37] = [
        0x80, 0x01, 0, 0, 0, 37, 0, 0, 0, 0, // header
        0x00, 0, 0, 0, 5, 0, 0, 0, 3, // moreData, TPM_CAP_PCRS, count
        0x00, 0x04, 3, 0xff, 0xff, 0xff, // sha1
        0x00, 0x0b, 3, 0xff, 0xff, 0xff, // sha256
        0x00, 0x0c, 3, 0, 0, 0, // sha384, no PCR selected
    ];

    #[test]
    fn active_banks_are_the_selected_ones() {
        assert_eq!(parse_pcr_banks(&CAPS), Ok(vec![0x0004, 0x000b]));
        assert_eq!(Bank::from_alg(0x000b), Some(Bank::Sha256));
        assert_eq!(Bank::from_alg(0x0012), None);
    }

    #[test]
    fn bad_responses_are_named_errors() {
        assert_eq!(
            parse_pcr_banks(&CAPS[..5]),
            Err(Tpm2Error::Short("GetCapability", 5))
        );
        assert_eq!(
            parse_pcr_banks(&CAPS[..30]),
            Err(Tpm2Error::Size("GetCapability", 37, 30))
        );
        let mut truncated = CAPS[..34].to_vec();
        truncated[5] = 34;
        assert_eq!(
            parse_pcr_banks(&truncated),
            Err(Tpm2Error::Malformed("GetCapability", "truncated"))
        );
        let failed = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x22];
        let e = check_pcr_extend(&failed).unwrap_err();
        assert_eq!(e.to_string(), "TPM2_PCR_Extend failed: response code 0x922");
    }

    #[test]
    fn pcr_extend_command_bytes() {
        let digest = Bank::Sha1.digest(b"enter-initrd");
        let cmd = pcr_extend(11, &[(Bank::Sha1, digest.clone())]);
        let mut expected = vec![
            0x80, 0x02, 0, 0, 0, 53, 0, 0, 0x01, 0x82, // header, 10 + 4 + 4 + 9 + 4 + 2 + 20
            0, 0, 0, 11, // PCR 11
            0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, // password session
            0, 0, 0, 1, 0x00, 0x04, // one sha1 digest
        ];
        expected.extend_from_slice(&digest);
        assert_eq!(cmd, expected);
        let ok = [
            0x80, 0x02, 0, 0, 0, 19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
        ];
        assert_eq!(check_pcr_extend(&ok), Ok(()));
    }

    #[test]
    fn banks_by_name_and_extension() {
        assert_eq!(Bank::from_name("SHA384"), Some(Bank::Sha384));
        assert_eq!(Bank::from_name("sm3_256"), None);
        for bank in Bank::ALL {
            assert_eq!(Bank::from_name(bank.name()), Some(bank));
            assert_eq!(bank.digest(b"").len(), bank.size());
            let (pcr, d) = (vec![7; bank.size()], bank.digest(b"x"));
            assert_eq!(bank.extend(&pcr, &d), bank.digest(&[pcr, d].concat()));
        }
    }

    #[test]
    fn digests_of_the_phase_word() {
        // The FIPS 180 "abc" examples.
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(Bank::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Bank::Sha384.digest(b"").len(), 48);
        assert_eq!(Bank::Sha512.digest(b"").len(), 64);
        assert_eq!(
            hex(Bank::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
