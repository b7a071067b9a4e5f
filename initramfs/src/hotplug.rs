//! Hot-plug: load the modules for devices that appear while the system
//! runs (a USB disk or network adapter plugged in, a Thunderbolt dock, a
//! disk behind a controller whose driver was just loaded).
//!
//! The kernel announces each device on the netlink uevent socket
//! (`NETLINK_KOBJECT_UEVENT`, multicast group 1: the kernel's own messages;
//! udev's re-broadcasts on group 2 start with `libudev` and are ignored, as
//! is anything whose sender is not the kernel). A message is
//! `ACTION@DEVPATH\0KEY=VALUE\0...` (`lib/kobject_uevent.c`); for `add`
//! events with a `MODALIAS` the modules it matches in `modules.alias` are
//! loaded ([`Coldplug::load_alias`]), with their dependencies.
//!
//! The socket is opened before the coldplug scan, so a device that appears
//! during the scan is not missed; events for devices the scan handled are
//! harmless (their modules are loaded already). When the socket cannot be
//! opened, PID 1 falls back to rescanning sysfs every two seconds.
//! Deliberately unsupported: firmware loading requests (the kernel loads
//! firmware itself from /lib/firmware), `remove` (modules stay loaded) and
//! device nodes (devtmpfs makes them).

use std::os::fd::OwnedFd;

use crate::coldplug::Coldplug;
use crate::log::Log;
use crate::sys;

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: Option<String>,
    pub modalias: Option<String>,
    pub seqnum: Option<u64>,
}

impl Uevent {
    /// Parse a kernel uevent datagram. None for udev's messages and
    /// anything malformed.
    pub fn parse(buf: &[u8]) -> Option<Uevent> {
        let mut fields = buf.split(|&b| b == 0);
        let head = std::str::from_utf8(fields.next()?).ok()?;
        let (action, devpath) = head.split_once('@')?;
        if action.is_empty() || !devpath.starts_with('/') {
            return None;
        }
        let mut e = Uevent {
            action: action.to_string(),
            devpath: devpath.to_string(),
            subsystem: None,
            modalias: None,
            seqnum: None,
        };
        for f in fields {
            let Ok(f) = std::str::from_utf8(f) else {
                continue;
            };
            match f.split_once('=') {
                Some(("ACTION", v)) if v != action => return None,
                Some(("SUBSYSTEM", v)) => e.subsystem = Some(v.to_string()),
                Some(("MODALIAS", v)) if !v.is_empty() => e.modalias = Some(v.to_string()),
                Some(("SEQNUM", v)) => e.seqnum = v.parse().ok(),
                _ => {}
            }
        }
        Some(e)
    }

    /// The modalias to load modules for, if this event asks for any.
    pub fn wants_modules(&self) -> Option<&str> {
        (self.action == "add")
            .then_some(self.modalias.as_deref())
            .flatten()
    }
}

/// The open uevent socket.
pub struct Uevents {
    fd: OwnedFd,
}

impl Uevents {
    pub fn open() -> std::io::Result<Uevents> {
        sys::uevent_socket().map(|fd| Uevents { fd })
    }

    /// Handle events for ever in a thread that owns `coldplug`.
    pub fn spawn(self, mut coldplug: Coldplug, log: &'static Log) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("hotplug".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match sys::recv_uevent(&self.fd, &mut buf) {
                        Ok(Some(n)) => {
                            if let Some(alias) = Uevent::parse(&buf[..n])
                                .as_ref()
                                .and_then(Uevent::wants_modules)
                            {
                                coldplug.load_alias(alias, log);
                            }
                        }
                        Ok(None) => {}
                        // ENOBUFS: events were dropped; rescan sysfs for them.
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            log.warn("uevents were dropped; rescanning sysfs");
                            coldplug.scan(log);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            log.error(&format!("reading uevents: {e}; hot-plug stops"));
                            return;
                        }
                    }
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded by `testdata/gen-uevents.py`.
    const PCI_ADD: &[u8] = include_bytes!("../testdata/uevent-pci-add.bin");

    #[test]
    fn recorded_pci_add() {
        let e = Uevent::parse(PCI_ADD).expect("parses");
        assert_eq!(e.action, "add");
        assert_eq!(e.devpath, "/devices/pci0000:00/0000:00:00.0");
        assert_eq!(e.subsystem.as_deref(), Some("pci"));
        assert_eq!(
            e.wants_modules(),
            Some("pci:v00008086d00000D57sv00000000sd00000000bc06sc00i00")
        );
        assert!(e.seqnum.is_some());
    }

    #[test]
    fn only_adds_with_a_modalias_load_modules() {
        let remove = b"remove@/devices/x\0ACTION=remove\0MODALIAS=usb:v1234\0SEQNUM=9\0";
        let e = Uevent::parse(remove).expect("parses");
        assert_eq!((e.wants_modules(), e.seqnum), (None, Some(9)));
        let bind = b"bind@/devices/x\0ACTION=bind\0DRIVER=e1000\0";
        assert_eq!(
            Uevent::parse(bind).and_then(|e| e.wants_modules().map(str::to_string)),
            None
        );
        let no_alias = b"add@/devices/virtual/block/loop0\0ACTION=add\0SUBSYSTEM=block\0";
        assert_eq!(
            Uevent::parse(no_alias).expect("parses").wants_modules(),
            None
        );
    }

    #[test]
    fn udev_messages_and_garbage_are_ignored() {
        // udev's own multicast format (group 2).
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe\x28\0\0\0"), None);
        assert_eq!(Uevent::parse(b""), None);
        assert_eq!(Uevent::parse(b"add@relative\0"), None);
        assert_eq!(Uevent::parse(b"@/devices\0"), None);
        // The header and ACTION must agree.
        assert_eq!(Uevent::parse(b"add@/devices/x\0ACTION=remove\0"), None);
        // Every prefix of a real event parses or is refused; no panic.
        for n in 0..PCI_ADD.len() {
            let _ = Uevent::parse(&PCI_ADD[..n]);
        }
        let mut bad = PCI_ADD.to_vec();
        bad[60] = 0xff;
        let _ = Uevent::parse(&bad);
    }
}
