//! The kernel's uevent netlink socket: opened first thing in boot mode, so that devices that
//! appear while the initrd runs (a controller's disks after its driver loads, USB storage,
//! a slow NVMe) are seen without polling; and the parser of its messages.

use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::sockopt::set_socket_recv_buffer_size_force;
use rustix::net::{bind, recvfrom, socket_with, AddressFamily, RecvFlags, SocketFlags, SocketType};

/// One kernel uevent: `ACTION`, `DEVPATH`, `SUBSYSTEM` and, when present, `MODALIAS`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    pub modalias: Option<String>,
}

impl Uevent {
    /// A kernel message: `action@devpath` then NUL-separated `KEY=value` pairs. Anything
    /// else (libudev's messages, truncated or malformed ones) is None.
    pub fn parse(msg: &[u8]) -> Option<Uevent> {
        let mut fields = msg.split(|&b| b == 0).filter(|f| !f.is_empty());
        let header = std::str::from_utf8(fields.next()?).ok()?;
        header.split_once('@')?;
        let mut ev = Uevent::default();
        for field in fields {
            let Some((k, v)) = std::str::from_utf8(field)
                .ok()
                .and_then(|f| f.split_once('='))
            else {
                continue;
            };
            match k {
                "ACTION" => ev.action = v.to_owned(),
                "DEVPATH" => ev.devpath = v.to_owned(),
                "SUBSYSTEM" => ev.subsystem = v.to_owned(),
                "MODALIAS" => ev.modalias = Some(v.to_owned()),
                _ => {}
            }
        }
        (!ev.action.is_empty() && !ev.devpath.is_empty()).then_some(ev)
    }
}

/// The socket, bound to the kernel's multicast group.
pub struct Monitor {
    fd: OwnedFd,
}

impl Monitor {
    /// Fails on kernels without netlink (CONFIG_NET off, as in a minimal test kernel).
    pub fn open() -> std::io::Result<Monitor> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )?;
        bind(&fd, &SocketAddrNetlink::new(0, 1))?;
        // Room for the bursts a driver load causes while /init is busy merging (as udev).
        let _ = set_socket_recv_buffer_size_force(&fd, 16 << 20);
        Ok(Monitor { fd })
    }

    /// Waits until a message arrives or `deadline` passes; returns every kernel uevent
    /// queued by then (none on timeout), None when some were lost (see [`Monitor::drain`]).
    pub fn wait(&self, deadline: Instant) -> Option<Vec<Uevent>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        if poll(&mut fds, Some(&timeout)).unwrap_or(0) == 0 {
            return Some(Vec::new());
        }
        self.drain()
    }

    /// Every kernel uevent queued now, without blocking; None when the socket overflowed
    /// (ENOBUFS: events were lost, the caller looks at sysfs again).
    pub fn drain(&self) -> Option<Vec<Uevent>> {
        let mut events = Vec::new();
        let mut buf = vec![0u8; 8192];
        let mut lost = false;
        loop {
            let (len, from) = match recvfrom(&self.fd, &mut buf[..], RecvFlags::empty()) {
                Ok((_, len, from)) => (len, from),
                Err(Errno::NOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(_) => break,
            };
            // Only the kernel (port 0) speaks on this group; anything else is ignored.
            let from_kernel = from
                .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                .is_some_and(|a| a.pid() == 0);
            if let Some(ev) = from_kernel.then(|| Uevent::parse(&buf[..len])).flatten() {
                events.push(ev);
            }
        }
        (!lost).then_some(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_messages_and_rejects_others() {
        let msg = b"add@/devices/pci0000:00/0000:00:04.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\0SEQNUM=1234\0";
        let ev = Uevent::parse(msg).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.subsystem, "pci");
        assert_eq!(ev.devpath, "/devices/pci0000:00/0000:00:04.0");
        assert_eq!(
            ev.modalias.as_deref(),
            Some("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02")
        );
        // libudev's messages start with "libudev\0" and a binary header.
        assert_eq!(
            Uevent::parse(b"libudev\0\xfe\xed\xca\xfe\0ACTION=add\0"),
            None
        );
        assert_eq!(Uevent::parse(b"add@/x\0SUBSYSTEM=block\0"), None);
        assert_eq!(Uevent::parse(b""), None);
        assert_eq!(Uevent::parse(b"\xff@\0ACTION=add\0DEVPATH=/x"), None);
    }
}
