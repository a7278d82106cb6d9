//! Measured boot: PCR 11 extended with `enter-initrd` when boot mode starts and `leave-initrd`
//! before switch root, in every active bank, as systemd-pcrphase does (the word's bytes, no
//! NUL), so `systemd-measure calculate --phase=enter-initrd:leave-initrd` predicts PCR 11; and
//! PCR 13 with each merged extension's event (`image::measure`), which `pcr predict` predicts.

use std::fs::File;
use std::io::{Read, Write};
use std::time::Instant;

use log::{info, warn};

use crate::format::tpm2::{self, Bank};
use crate::image::measure;

/// systemd's TPM_PCR_INDEX_KERNEL_IMAGE: the UKI's sections, then the boot phases.
const PHASE_PCR: u32 = 11;
const DEVICES: [&str; 2] = ["/dev/tpmrm0", "/dev/tpm0"];

/// The TPM and its active banks, kept from `enter-initrd` to `leave-initrd`.
pub struct Measure {
    tpm: Option<(File, Vec<Bank>)>,
}

impl Measure {
    /// Opens the TPM and measures `enter-initrd` (the time logged includes opening the TPM and
    /// reading its banks); without one (or with `rd.sysext.measure=0`) says so once and
    /// measures nothing.
    pub fn enter_initrd(enabled: bool) -> Measure {
        let off = Measure { tpm: None };
        if !enabled {
            info!("rd.sysext.measure=0: not measuring");
            return off;
        }
        let t = Instant::now();
        let Some(mut file) = DEVICES.iter().find_map(|d| open(d)) else {
            info!("no TPM: not measuring");
            return off;
        };
        let banks = match active_banks(&mut file) {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => {
                warn!("the TPM has no PCR bank we can hash for: not measuring");
                return off;
            }
            Err(e) => {
                warn!("reading the TPM's PCR banks: {e}; not measuring");
                return off;
            }
        };
        let mut m = Measure {
            tpm: Some((file, banks)),
        };
        m.extend(PHASE_PCR, "enter-initrd", t);
        m
    }

    /// Measures a merged extension's event into PCR 13.
    pub fn extension(&mut self, event: &str) {
        self.extend(measure::PCR, event, Instant::now());
    }

    /// Measures `leave-initrd` and closes the TPM.
    pub fn leave_initrd(mut self) {
        self.extend(PHASE_PCR, "leave-initrd", Instant::now());
    }

    /// Extends `pcr` with the bytes of `word`; the time logged runs from `t`.
    fn extend(&mut self, pcr: u32, word: &str, t: Instant) {
        let Some((file, banks)) = &mut self.tpm else {
            return;
        };
        let digests: Vec<(Bank, Vec<u8>)> = banks
            .iter()
            .map(|&b| (b, b.digest(word.as_bytes())))
            .collect();
        let names: Vec<&str> = banks.iter().map(|b| b.name()).collect();
        let sent = transact(file, &tpm2::pcr_extend(pcr, &digests))
            .and_then(|r| tpm2::check_pcr_extend(&r).map_err(|e| e.to_string()));
        match sent {
            Ok(()) => info!(
                "PCR {pcr} extended with {word} ({}) in {:.1} ms",
                names.join(", "),
                t.elapsed().as_secs_f64() * 1000.0
            ),
            Err(e) => warn!("extending PCR {pcr} with {word}: {e}"),
        }
    }
}

fn open(path: &str) -> Option<File> {
    File::options().read(true).write(true).open(path).ok()
}

/// The active banks we can hash for; others are named in a warning.
fn active_banks(file: &mut File) -> Result<Vec<Bank>, String> {
    let resp = transact(file, &tpm2::get_pcr_banks())?;
    let algs = tpm2::parse_pcr_banks(&resp).map_err(|e| e.to_string())?;
    let mut banks = Vec::new();
    for alg in algs {
        match Bank::from_alg(alg) {
            Some(b) => banks.push(b),
            None => warn!("PCR bank with algorithm {alg:#06x} left out: no hash for it"),
        }
    }
    Ok(banks)
}

/// One command written to the TPM device, its whole response read back.
fn transact(file: &mut File, command: &[u8]) -> Result<Vec<u8>, String> {
    file.write_all(command)
        .map_err(|e| format!("writing to the TPM: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = file
        .read(&mut buf)
        .map_err(|e| format!("reading from the TPM: {e}"))?;
    buf.truncate(n);
    Ok(buf)
}
