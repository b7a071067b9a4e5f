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
//! | `rescue.job=ID` | an unattended job; passed to `rescue` as `RESCUE_JOB` |
//! | `rescue.server=HOST[:PORT]` | the PXE server; passed to `rescue` as `RESCUE_SERVER` |
//! | `rescue.modules=a,b` | extra modules to load before coldplug |
//! | `rescue.nocoldplug` | do not load modules for the hardware found |
//!
//! Deliberately unsupported: the kernel's `--` separator for init arguments
//! (the kernel passes those as argv, which `rescue-init` ignores).

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
        for word in split_words(text) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
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
                    c.after = match value {
                        Some("reboot") => After::Reboot,
                        Some("halt") => After::Halt,
                        Some("tui") => After::Tui,
                        _ => After::PowerOff,
                    }
                }
                "rescue.job" => c.job = value.filter(|v| !v.is_empty()).map(str::to_string),
                "rescue.server" => c.server = value.filter(|v| !v.is_empty()).map(str::to_string),
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
        c
    }

    /// The console that gets one-shot output (`/dev/console` is the last
    /// `console=`).
    pub fn primary_console(&self) -> &str {
        self.consoles.last().map(String::as_str).unwrap_or("tty1")
    }
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
}
