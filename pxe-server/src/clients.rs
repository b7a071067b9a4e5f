//! Every client the server has seen, for `GET /clients` and `pxe-server status`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bundle::KernelArch;
use crate::mac::Mac;

/// What the live system reports (`POST /clients/<mac>/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientStatus {
    /// e.g. "running", "done", "failed".
    pub state: String,
    /// 0.0 ..= 1.0
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub mac: Mac,
    pub ip: Option<Ipv4Addr>,
    pub firmware: Option<String>,
    /// The live system its firmware runs (DHCP option 93 at its last
    /// request): which kernel its iPXE script and GRUB config name.
    #[serde(default)]
    pub arch: Option<KernelArch>,
    /// Files and URLs handed out, most recent last (bounded).
    pub served: Vec<String>,
    pub job: Option<String>,
    /// The last report.
    pub status: Option<ClientStatus>,
    /// Each change of state or message, oldest first (bounded): what a
    /// job went through, e.g. running, then failed and why, even after the
    /// machine booted again and reported something else.
    #[serde(default)]
    pub history: Vec<StatusEvent>,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One change in a client's reports (progress alone is not one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
}

const MAX_SERVED: usize = 16;
const MAX_HISTORY: usize = 32;
/// Bound on remembered clients so a flood of fake MACs cannot eat memory.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<BTreeMap<Mac, ClientRecord>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Registry {
    fn with<R>(&self, mac: Mac, f: impl FnOnce(&mut ClientRecord) -> R) -> Option<R> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&mac) && m.len() >= MAX_CLIENTS {
            return None;
        }
        let t = now();
        let r = m.entry(mac).or_insert_with(|| ClientRecord {
            mac,
            ip: None,
            firmware: None,
            arch: None,
            served: Vec::new(),
            job: None,
            status: None,
            history: Vec::new(),
            first_seen: t,
            last_seen: t,
        });
        r.last_seen = t;
        Some(f(r))
    }

    /// A DHCP exchange: firmware, its architecture when one the server
    /// serves (an unknown one keeps what an earlier stage said), what it
    /// was told to load, its job.
    pub fn dhcp(
        &self,
        mac: Mac,
        firmware: &str,
        arch: Option<KernelArch>,
        served: &str,
        job: Option<String>,
    ) {
        self.with(mac, |r| {
            r.firmware = Some(firmware.to_string());
            if arch.is_some() {
                r.arch = arch;
            }
            push_served(r, served);
            if job.is_some() {
                r.job = job;
            }
        });
    }

    /// The architecture remembered for `mac` from its DHCP requests.
    pub fn arch(&self, mac: Mac) -> Option<KernelArch> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&mac).and_then(|r| r.arch)
    }

    pub fn set_ip(&self, mac: Mac, ip: Ipv4Addr) {
        self.with(mac, |r| r.ip = Some(ip));
    }

    /// A file served over TFTP/HTTP, attributed by IP when the MAC is unknown.
    pub fn served_to_ip(&self, ip: Ipv4Addr, what: &str) {
        let mac = {
            let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            m.values().find(|r| r.ip == Some(ip)).map(|r| r.mac)
        };
        if let Some(mac) = mac {
            self.with(mac, |r| push_served(r, what));
        }
    }

    pub fn served_to_mac(&self, mac: Mac, what: &str) {
        self.with(mac, |r| push_served(r, what));
    }

    pub fn set_status(&self, mac: Mac, status: ClientStatus) -> bool {
        self.with(mac, |r| {
            let same = r.history.last().is_some_and(|e| e.state == status.state && e.message == status.message);
            if !same {
                if r.history.len() >= MAX_HISTORY {
                    r.history.remove(0);
                }
                r.history.push(StatusEvent { at: r.last_seen, state: status.state.clone(), message: status.message.clone() });
            }
            r.status = Some(status);
        })
        .is_some()
    }

    pub fn list(&self) -> Vec<ClientRecord> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.values().cloned().collect()
    }
}

fn push_served(r: &mut ClientRecord, what: &str) {
    if r.served.last().map(String::as_str) == Some(what) {
        return;
    }
    if r.served.len() >= MAX_SERVED {
        r.served.remove(0);
    }
    r.served.push(what.to_string());
}

/// One client's record and the history of its reports, for
/// `pxe-server status --client MAC`. Times are UTC.
pub fn format_client(c: &ClientRecord) -> String {
    let mut out = format_table(std::slice::from_ref(c));
    if c.served.is_empty() {
        out.push_str("served: nothing yet\n");
    } else {
        out.push_str(&format!("served: {}\n", c.served.join(", ")));
    }
    if c.history.is_empty() {
        out.push_str("no reports from the live system yet\n");
    }
    for e in &c.history {
        out.push_str(&format!("{}  {}", utc(e.at), e.state));
        if let Some(m) = &e.message {
            out.push_str(&format!(": {m}"));
        }
        out.push('\n');
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for seconds since the Unix epoch.
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Plain-text table for `pxe-server status`.
pub fn format_table(clients: &[ClientRecord]) -> String {
    let mut out = format!(
        "{:<17} {:<15} {:<22} {:<24} {:<12} {}\n",
        "MAC", "IP", "FIRMWARE", "SERVED", "STATE", "JOB"
    );
    for c in clients {
        let state = c
            .status
            .as_ref()
            .map(|s| match s.progress {
                Some(p) => format!("{} {:.0}%", s.state, p * 100.0),
                None => s.state.clone(),
            })
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<17} {:<15} {:<22} {:<24} {:<12} {}\n",
            c.mac.to_string(),
            c.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            c.firmware.as_deref().unwrap_or("-"),
            c.served.last().map(String::as_str).unwrap_or("-"),
            state,
            c.job.as_deref().unwrap_or("-"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_table() {
        let r = Registry::default();
        let m = Mac([0x52, 0x54, 0, 0, 0, 1]);
        r.dhcp(
            m,
            "x86 BIOS (0)",
            Some(KernelArch::X86_64),
            "tftp undionly.kpxe",
            Some("restore a to b".into()),
        );
        r.set_ip(m, Ipv4Addr::new(10, 0, 0, 50));
        r.served_to_ip(Ipv4Addr::new(10, 0, 0, 50), "vmlinuz");
        r.served_to_ip(Ipv4Addr::new(10, 0, 0, 51), "nobody");
        assert!(r.set_status(
            m,
            ClientStatus {
                state: "running".into(),
                progress: Some(0.5),
                message: None
            }
        ));
        let l = r.list();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].served, vec!["tftp undionly.kpxe", "vmlinuz"]);
        let t = format_table(&l);
        assert!(t.contains("running 50%"), "{t}");
        assert!(t.contains("10.0.0.50"), "{t}");
        let json = serde_json::to_string(&l).expect("json");
        assert!(json.contains("\"mac\":\"52:54:00:00:00:01\""), "{json}");
        assert!(json.contains("\"arch\":\"x86_64\""), "{json}");
        assert_eq!(r.arch(m), Some(KernelArch::X86_64));
        // A later stage with an architecture the server does not know
        // keeps the one the firmware gave.
        r.dhcp(m, "unassigned (99) iPXE", None, "refused", None);
        assert_eq!(r.arch(m), Some(KernelArch::X86_64));
        r.dhcp(
            m,
            "ARM 64-bit UEFI (11)",
            Some(KernelArch::Arm64),
            "x",
            None,
        );
        assert_eq!(r.arch(m), Some(KernelArch::Arm64));
    }

    fn report(r: &Registry, m: Mac, state: &str, progress: Option<f64>, message: Option<&str>) {
        assert!(r.set_status(m, ClientStatus { state: state.into(), progress, message: message.map(str::to_string) }));
    }

    #[test]
    fn history_keeps_changes_of_state_not_progress() {
        let r = Registry::default();
        let m = Mac([0x52, 0x54, 0, 0, 0, 2]);
        report(&r, m, "running", Some(0.1), Some("restoring /dev/sda"));
        report(&r, m, "running", Some(0.5), Some("restoring /dev/sda"));
        report(&r, m, "failed", None, Some("the image is damaged at byte 4096"));
        // The machine rebooted into the menu and says so: the failure stays
        // in the history.
        report(&r, m, "idle", None, None);
        let c = &r.list()[0];
        let states: Vec<(&str, Option<&str>)> = c.history.iter().map(|e| (e.state.as_str(), e.message.as_deref())).collect();
        assert_eq!(states, [("running", Some("restoring /dev/sda")), ("failed", Some("the image is damaged at byte 4096")), ("idle", None)]);
        assert_eq!(c.status.as_ref().map(|s| s.state.as_str()), Some("idle"));
        let text = format_client(c);
        assert!(text.contains("failed: the image is damaged at byte 4096"), "{text}");
        assert!(text.contains("idle\n"), "{text}");
        // Bounded: the oldest changes go first.
        for i in 0..100 {
            report(&r, m, "running", None, Some(&format!("step {i}")));
        }
        let c = &r.list()[0];
        assert_eq!(c.history.len(), MAX_HISTORY);
        assert_eq!(c.history.last().and_then(|e| e.message.as_deref()), Some("step 99"));
        // Records written before the history existed still decode.
        let old = r#"{"mac":"52:54:00:00:00:02","ip":null,"firmware":null,"served":[],"job":null,"status":null,"first_seen":1,"last_seen":2}"#;
        let rec: ClientRecord = serde_json::from_str(old).expect("old record");
        assert!(rec.history.is_empty());
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_616_339), "2026-12-07 04:05:39");
    }
}
