//! Signature partition parser on arbitrary bytes, then PKCS#7 parsing of what it yields.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use initrd_sysext::format::signature;
    if let Ok(j) = signature::SignatureJson::parse(data) {
        let _ = signature::verify(&j.signature, &j.root_hash, &[]);
    }
});
