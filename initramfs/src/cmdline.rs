//! The kernel command line (`/proc/cmdline`) as `rescue-init` reads it.
//!
//! Words are split on spaces; double quotes group words (`rescue.run="disks
//! --json"`), as the kernel's own `next_arg` does. Unknown words are ignored:
//! they belong to the kernel or to modules.
//!
//! Options (all optional):
//!
//! | word | meaning |
//! | --- | --- |
//! | `console=ttyS0,115200n8` | the consoles `rescue` is started on (each `console=`; `tty0` means the active VT, taken as `tty1`; the last one is the primary console); none given: `tty1` |
//! | `rescue.shell` (or `=1`) | start `/bin/sh` instead of `rescue` on the consoles, when the image has a shell |
//! | `rescue.run="disks --json"` | run this `rescue` subcommand once on the primary console, then do `rescue.after` |
//! | `rescue.after=poweroff\|reboot\|halt\|tui` | what follows `rescue.run` (default `poweroff`) |
//! | `rescue.job=restore\|backup` | an unattended job (`pxe-server` adds it with `rescue.image=`, `rescue.disk=`, `rescue.share=`, `rescue.then=`): `rescue job` runs once on the primary console (like `rescue.run=job`); when it succeeds and asks for it (exit 100/101) the machine powers off or reboots, otherwise the TUI starts (`rescue.after` may say otherwise) |
//! | `rescue.server=http://HOST:PORT` (or `HOST[:PORT]`) | the PXE server: where job images and progress reports go; passed to `rescue` as `RESCUE_SERVER` |
//! | `rescue.modules=a,b` | extra modules to load before coldplug |
//! | `rescue.nocoldplug` | do not load modules for the hardware found |
//! | `rescue.net=dhcp\|off\|IFACE\|MAC` | bring up the network with DHCP (on every wired interface, or only IFACE / the one with MAC), or not at all |
//! | `rescue.net.wait=SECONDS` | how long to wait for an address before starting `rescue` (default 10; DHCP goes on in the background) |
//! | `ip=dhcp`, `ip=IFACE:dhcp`, `ip=CLIENT:SERVER:GW:NETMASK:HOST:IFACE:AUTOCONF:DNS0:DNS1` | the kernel's (`nfsroot.txt`) and dracut's forms: DHCP, or a static address when AUTOCONF is `off`/`none`/`static` or empty with CLIENT given; `ip=off` turns networking off |
//! | `BOOTIF=01-52-54-00-12-34-56`, `rescue.mac=52:54:00:12:34:56` | the interface the machine booted from (pxelinux `IPAPPEND 2`, iPXE `${netX/mac:hexhyp}`, GRUB `${net_default_mac}`, `pxe-server`): DHCP on that one |
//! | `rescue.NAME=VALUE` (any other) | passed to `rescue` as `RESCUE_NAME=VALUE` (e.g. the job parameters `rescue.image=`, `rescue.disk=`, `rescue.share=`, `rescue.then=` of `pxe-server`) |
//!
//! Networking starts when asked for (`rescue.net`, `ip=`) or when the
//! machine was booted from the network (`BOOTIF=`, or `rescue.server=` /
//! `rescue.job=`, which the PXE server adds); `rescue.net=off` wins over
//! everything.
//!
//! Deliberately unsupported: the kernel's `--` separator for init arguments
//! (the kernel passes those as argv, which `rescue-init` ignores).

use std::net::Ipv4Addr;

/// How to bring up the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRequest {
    /// Only this interface (`eth0`).
    pub interface: Option<String>,
    /// Only the interface with this MAC address (`BOOTIF=`).
    pub mac: Option<[u8; 6]>,
    pub method: NetMethod,
    /// Seconds to wait for an address before starting `rescue`.
    pub wait: u32,
}

/// DHCP or a fixed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMethod {
    Dhcp,
    Static(StaticIp),
}

/// A fixed IPv4 configuration from `ip=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// Default of `rescue.net.wait`.
pub const NET_WAIT: u32 = 10;

/// What the command line asks of `rescue-init`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    /// Console device names without `/dev/` (`ttyS0`, `tty1`), in command-line
    /// order; the last one is the primary console (`/dev/console`).
    pub consoles: Vec<String>,
    pub shell: bool,
    /// Arguments of a one-shot `rescue` run.
    pub run: Option<Vec<String>>,
    pub after: After,
    pub job: Option<String>,
    pub server: Option<String>,
    pub modules: Vec<String>,
    pub coldplug: bool,
    /// Networking, when asked for or booted from the network.
    pub net: Option<NetRequest>,
    /// Every `rescue.NAME=VALUE` for `rescue`, as (`RESCUE_NAME`, value),
    /// in command-line order (a later one replaces an earlier one);
    /// including `rescue.job` and `rescue.server`, without the options
    /// `rescue-init` itself takes.
    pub params: Vec<(String, String)>,
    /// `loglevel=` or `debug` was given: leave the console log level alone
    /// (otherwise `rescue-init` lowers it so module messages do not draw
    /// over the TUI).
    pub keep_loglevel: bool,
}

/// What happens when a `rescue.run` command finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum After {
    #[default]
    PowerOff,
    Reboot,
    /// Stop the machine without powering it off (leaves the output readable).
    Halt,
    /// Go on with the interactive `rescue` on the consoles.
    Tui,
}

impl Cmdline {
    /// Parse the text of `/proc/cmdline`. Never fails: bad values are ignored
    /// (a typo on the command line must not stop the machine from booting).
    pub fn parse(text: &str) -> Cmdline {
        let mut c = Cmdline {
            coldplug: true,
            ..Cmdline::default()
        };
        let (mut rescue_net, mut ip, mut bootif, mut wait) = (None, None, None, None);
        let mut after_given = false;
        for word in split_words(text) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            if let (Some(name), Some(v)) = (key.strip_prefix("rescue."), value) {
                let own = [
                    "shell",
                    "nocoldplug",
                    "run",
                    "after",
                    "modules",
                    "net",
                    "net.wait",
                ];
                if !own.contains(&name)
                    && !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    let env = format!("RESCUE_{}", name.to_ascii_uppercase());
                    c.params.retain(|(k, _)| *k != env);
                    c.params.push((env, v.to_string()));
                }
            }
            match key {
                "console" => {
                    if let Some(v) = value {
                        let name = v.split(',').next().unwrap_or_default();
                        let name = name.strip_prefix("/dev/").unwrap_or(name);
                        let name = if name == "tty0" { "tty1" } else { name };
                        if is_device_name(name) {
                            // Like the kernel, the last mention wins the
                            // primary place.
                            c.consoles.retain(|n| n != name);
                            c.consoles.push(name.to_string());
                        }
                    }
                }
                "loglevel" | "debug" => c.keep_loglevel = true,
                "rescue.shell" => c.shell = flag(value),
                "rescue.nocoldplug" => c.coldplug = !flag(value),
                "rescue.run" => {
                    let args: Vec<String> = value
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    c.run = (!args.is_empty()).then_some(args);
                }
                "rescue.after" => {
                    after_given = true;
                    c.after = match value {
                        Some("reboot") => After::Reboot,
                        Some("halt") => After::Halt,
                        Some("tui") => After::Tui,
                        _ => After::PowerOff,
                    }
                }
                "rescue.job" => c.job = value.filter(|v| !v.is_empty()).map(str::to_string),
                "rescue.server" => c.server = value.filter(|v| !v.is_empty()).map(str::to_string),
                "rescue.net" => rescue_net = Some(value.unwrap_or("dhcp").to_string()),
                "rescue.net.wait" => wait = value.and_then(|v| v.parse::<u32>().ok()),
                "ip" => ip = value.map(str::to_string),
                "BOOTIF" | "rescue.mac" => bootif = value.and_then(parse_mac).or(bootif),
                "rescue.modules" => {
                    c.modules = value
                        .unwrap_or_default()
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
        if c.consoles.is_empty() {
            c.consoles.push("tty1".to_string());
        }
        // A job from the PXE server: `rescue job` reads its parameters from
        // the environment. It asks for power-off or reboot itself when it
        // succeeds; after a failure the TUI shows what happened.
        if c.job.is_some() && c.run.is_none() {
            c.run = Some(vec!["job".to_string()]);
            if !after_given {
                c.after = After::Tui;
            }
        }
        let netbooted = bootif.is_some() || c.server.is_some() || c.job.is_some();
        let req = match (rescue_net.as_deref(), ip.as_deref()) {
            (Some(v), _) => parse_rescue_net(v),
            (None, Some(v)) => parse_ip(v),
            (None, None) if netbooted => Some(NetRequest {
                interface: None,
                mac: None,
                method: NetMethod::Dhcp,
                wait: NET_WAIT,
            }),
            (None, None) => None,
        };
        c.net = req.map(|mut r| {
            if r.interface.is_none() && r.mac.is_none() {
                r.mac = bootif;
            }
            r.wait = wait.unwrap_or(NET_WAIT).min(600);
            r
        });
        c
    }

    /// The console that gets one-shot output (`/dev/console` is the last
    /// `console=`).
    pub fn primary_console(&self) -> &str {
        self.consoles.last().map(String::as_str).unwrap_or("tty1")
    }
}

fn is_off(v: &str) -> bool {
    matches!(v, "off" | "none" | "0" | "no" | "false")
}

fn is_dhcp(v: &str) -> bool {
    matches!(
        v,
        "dhcp" | "on" | "any" | "both" | "bootp" | "dhcp4" | "1" | "yes" | "true" | "auto"
    )
}

fn dhcp_on(interface: Option<String>, mac: Option<[u8; 6]>) -> Option<NetRequest> {
    Some(NetRequest {
        interface,
        mac,
        method: NetMethod::Dhcp,
        wait: NET_WAIT,
    })
}

/// `rescue.net=dhcp|off|IFACE|MAC`.
fn parse_rescue_net(v: &str) -> Option<NetRequest> {
    if is_off(v) {
        None
    } else if is_dhcp(v) || v.is_empty() {
        dhcp_on(None, None)
    } else if let Some(mac) = parse_mac(v) {
        dhcp_on(None, Some(mac))
    } else if is_device_name(v) {
        dhcp_on(Some(v.to_string()), None)
    } else {
        None
    }
}

/// `ip=` in the kernel's form (`Documentation/admin-guide/nfs/nfsroot.rst`:
/// `CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0`) or
/// dracut's (`IFACE:dhcp`). Unusable values mean no network.
fn parse_ip(v: &str) -> Option<NetRequest> {
    if is_off(v) {
        return None;
    }
    if is_dhcp(v) {
        return dhcp_on(None, None);
    }
    let f: Vec<&str> = v.split(':').collect();
    if f.len() == 2 && is_device_name(f[0]) {
        return if is_dhcp(f[1]) {
            dhcp_on(Some(f[0].to_string()), None)
        } else {
            None
        };
    }
    let field = |i: usize| f.get(i).copied().unwrap_or("");
    let ip = |i: usize| field(i).parse::<Ipv4Addr>().ok();
    if !field(0).is_empty() && ip(0).is_none() {
        return None;
    }
    let interface = Some(field(5))
        .filter(|d| is_device_name(d))
        .map(str::to_string);
    let autoconf = field(6);
    if is_off(autoconf) || autoconf == "static" || (autoconf.is_empty() && ip(0).is_some()) {
        let address = ip(0)?;
        let prefix = match ip(3) {
            Some(m) => u32::from(m).leading_ones() as u8,
            None => match address.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
        };
        return Some(NetRequest {
            interface,
            mac: None,
            method: NetMethod::Static(StaticIp {
                address,
                prefix,
                gateway: ip(2).filter(|g| !g.is_unspecified()),
                dns: [ip(7), ip(8)].into_iter().flatten().collect(),
            }),
            wait: NET_WAIT,
        });
    }
    if is_dhcp(autoconf) || autoconf.is_empty() {
        return dhcp_on(interface, None);
    }
    None
}

/// A MAC address: six hex pairs separated by `-` or `:`, optionally after
/// the ARP hardware type `01-` (pxelinux's `BOOTIF=01-52-54-00-12-34-56`).
pub fn parse_mac(v: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = v.split(['-', ':']).collect();
    let parts = match parts.len() {
        7 if parts[0] == "01" => &parts[1..],
        6 => &parts[..],
        _ => return None,
    };
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

fn flag(value: Option<&str>) -> bool {
    !matches!(value, Some("0" | "no" | "false" | "off"))
}

/// `ttyS0`, `tty1`, `hvc0`, `ttyAMA0`: letters and digits only, so a value
/// cannot walk out of `/dev`.
fn is_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Split like the kernel: whitespace separates words, a double quote toggles
/// quoting and is removed.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_tty1_and_coldplug() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz quiet\n");
        assert_eq!(c.consoles, ["tty1"]);
        assert!(c.coldplug && !c.shell && !c.keep_loglevel);
        assert!(Cmdline::parse("loglevel=7").keep_loglevel);
        assert_eq!(c.run, None);
        assert_eq!(c.after, After::PowerOff);
    }

    #[test]
    fn consoles_in_order_deduplicated() {
        let c =
            Cmdline::parse("console=tty0 console=ttyS0,115200n8 console=ttyS0 console=/dev/hvc0");
        assert_eq!(c.consoles, ["tty1", "ttyS0", "hvc0"]);
        assert_eq!(c.primary_console(), "hvc0");
        let c = Cmdline::parse("console=ttyS0,115200n8 console=tty0 console=ttyS0");
        assert_eq!(c.consoles, ["tty1", "ttyS0"]);
    }

    #[test]
    fn a_job_runs_rescue_job_then_the_tui() {
        let c = Cmdline::parse("console=ttyS0 rescue.server=http://10.0.0.1:8080 rescue.mac=52:54:00:00:00:01 rescue.job=restore rescue.image=a.rimg rescue.disk=disk0 rescue.then=poweroff");
        assert_eq!(c.run, Some(vec!["job".to_string()]));
        assert_eq!(c.after, After::Tui, "after a failed job the TUI shows it; success powers off by exit code");
        let env: Vec<(&str, &str)> = c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for kv in [("RESCUE_JOB", "restore"), ("RESCUE_IMAGE", "a.rimg"), ("RESCUE_DISK", "disk0"), ("RESCUE_THEN", "poweroff"), ("RESCUE_MAC", "52:54:00:00:00:01"), ("RESCUE_SERVER", "http://10.0.0.1:8080")] {
            assert!(env.contains(&kv), "{kv:?} in {env:?}");
        }
        assert!(c.net.is_some(), "a job brings the network up");
        // An explicit rescue.run or rescue.after wins.
        let c = Cmdline::parse("rescue.job=backup rescue.after=poweroff");
        assert_eq!((c.run.as_deref(), c.after), (Some(&["job".to_string()][..]), After::PowerOff));
        let c = Cmdline::parse("rescue.job=backup rescue.run=disks");
        assert_eq!(c.run, Some(vec!["disks".to_string()]));
    }

    #[test]
    fn rejects_console_paths() {
        let c = Cmdline::parse("console=../etc/passwd console=ttyS1");
        assert_eq!(c.consoles, ["ttyS1"]);
    }

    #[test]
    fn rescue_options() {
        let c = Cmdline::parse(
            r#"console=ttyS0 rescue.run="disks --json" rescue.after=reboot rescue.job=restore-7 rescue.server=10.0.0.1:8080 rescue.shell rescue.modules=nvme,,e1000e rescue.nocoldplug"#,
        );
        assert_eq!(c.run, Some(vec!["disks".to_string(), "--json".to_string()]));
        assert_eq!(c.after, After::Reboot);
        assert_eq!(c.job.as_deref(), Some("restore-7"));
        assert_eq!(c.server.as_deref(), Some("10.0.0.1:8080"));
        assert!(c.shell);
        assert!(!c.coldplug);
        assert_eq!(c.modules, ["nvme", "e1000e"]);
    }

    #[test]
    fn flags_can_be_switched_off_and_empty_values_ignored() {
        let c = Cmdline::parse("rescue.shell=0 rescue.job= rescue.run= rescue.after=bogus");
        assert!(!c.shell);
        assert_eq!(c.job, None);
        assert_eq!(c.run, None);
        assert_eq!(c.after, After::PowerOff);
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split_words(r#"a "b c" d="e f"g  "#), ["a", "b c", "d=e fg"]);
        assert_eq!(split_words(r#"x="" y"#), ["x=", "y"]);
    }

    fn dhcp(interface: Option<&str>, mac: Option<[u8; 6]>) -> Option<NetRequest> {
        Some(NetRequest {
            interface: interface.map(str::to_string),
            mac,
            method: NetMethod::Dhcp,
            wait: NET_WAIT,
        })
    }

    #[test]
    fn no_network_unless_asked_or_netbooted() {
        assert_eq!(Cmdline::parse("console=ttyS0 quiet").net, None);
        assert_eq!(Cmdline::parse("ip=dhcp").net, dhcp(None, None));
        assert_eq!(Cmdline::parse("rescue.net").net, dhcp(None, None));
        assert_eq!(
            Cmdline::parse("rescue.server=10.0.0.1:8080").net,
            dhcp(None, None)
        );
        assert_eq!(Cmdline::parse("rescue.job=restore-7").net, dhcp(None, None));
        // rescue.net=off wins over everything, ip=off over being netbooted.
        assert_eq!(
            Cmdline::parse("ip=dhcp rescue.net=off BOOTIF=01-52-54-00-12-34-56").net,
            None
        );
        assert_eq!(Cmdline::parse("rescue.server=x ip=off").net, None);
        assert_eq!(Cmdline::parse("ip=none").net, None);
    }

    #[test]
    fn bootif_picks_the_interface() {
        let mac = Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(
            Cmdline::parse("BOOTIF=01-52-54-00-12-34-56").net,
            dhcp(None, mac)
        );
        assert_eq!(
            Cmdline::parse("ip=dhcp BOOTIF=52:54:00:12:34:56").net,
            dhcp(None, mac)
        );
        // A named interface wins over BOOTIF.
        assert_eq!(
            Cmdline::parse("rescue.net=eth1 BOOTIF=01-52-54-00-12-34-56").net,
            dhcp(Some("eth1"), None)
        );
        assert_eq!(
            Cmdline::parse("rescue.net=52-54-00-12-34-56").net,
            dhcp(None, mac)
        );
        assert_eq!(parse_mac("01-52-54-00-12"), None);
        assert_eq!(parse_mac("02-52-54-00-12-34-56"), None);
        assert_eq!(parse_mac("52:54:00:12:34:5g"), None);
        assert_eq!(parse_mac("152:54:00:12:34:56"), None);
    }

    #[test]
    fn kernel_and_dracut_ip_forms() {
        assert_eq!(Cmdline::parse("ip=eth0:dhcp").net, dhcp(Some("eth0"), None));
        assert_eq!(Cmdline::parse("ip=::::::dhcp").net, dhcp(None, None));
        assert_eq!(
            Cmdline::parse("ip=:::::eth2:any").net,
            dhcp(Some("eth2"), None)
        );
        let c = Cmdline::parse("ip=192.168.1.10::192.168.1.1:255.255.255.0:box:eth0:off:192.168.1.2:9.9.9.9 rescue.net.wait=30");
        assert_eq!(
            c.net,
            Some(NetRequest {
                interface: Some("eth0".into()),
                mac: None,
                method: NetMethod::Static(StaticIp {
                    address: Ipv4Addr::new(192, 168, 1, 10),
                    prefix: 24,
                    gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
                    dns: vec![Ipv4Addr::new(192, 168, 1, 2), Ipv4Addr::new(9, 9, 9, 9)],
                }),
                wait: 30,
            })
        );
        // Static without a mask: classful; without an address: unusable.
        let c = Cmdline::parse("ip=10.1.2.3");
        assert!(matches!(
            c.net,
            Some(NetRequest {
                method: NetMethod::Static(StaticIp { prefix: 8, .. }),
                ..
            })
        ));
        assert_eq!(Cmdline::parse("ip=:::::eth0:off").net, None);
        assert_eq!(Cmdline::parse("ip=garbage:1:2").net, None);
        assert_eq!(Cmdline::parse("ip=eth0:bogus").net, None);
        assert_eq!(
            Cmdline::parse("ip=dhcp rescue.net.wait=x")
                .net
                .map(|n| n.wait),
            Some(NET_WAIT)
        );
    }

    #[test]
    fn rescue_params_go_to_rescue() {
        let c = Cmdline::parse(
            "rescue.job=restore rescue.image=//srv/img/pc7.img rescue.disk=0 rescue.run=disks rescue.then=reboot rescue.mac=52:54:00:00:00:01 rescue.Bad-Name=x rescue.disk=1",
        );
        let names: Vec<&str> = c.params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "RESCUE_JOB",
                "RESCUE_IMAGE",
                "RESCUE_THEN",
                "RESCUE_MAC",
                "RESCUE_DISK"
            ]
        );
        assert_eq!(c.params[1].1, "//srv/img/pc7.img");
        assert_eq!(c.params[4].1, "1");
        assert_eq!(c.net.and_then(|n| n.mac), Some([0x52, 0x54, 0, 0, 0, 1]));
    }
}
