//! Power off / reboot from the tools screen, after the terminal is restored.
//!
//! Linux: through the init system (`systemctl`), else the busybox tools with
//! `-f`. (As PID 1 the reboot syscall would be the way; it needs `unsafe`,
//! which belongs in the engine's `sys.rs`, so the forced tools are used
//! instead.) Windows (WinPE): `wpeutil shutdown` / `wpeutil reboot`, the way
//! Microsoft documents for WinPE ("Wpeutil command-line options"), when
//! `wpeutil.exe` is there; else InitiateSystemShutdownExW with
//! SeShutdownPrivilege enabled (`power/sys_windows.rs`), as on a full Windows.

use std::path::{Path, PathBuf};

use super::event::PowerAction;

/// One way to switch off or restart, tried in order until one works.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Run a program with arguments.
    Run(PathBuf, Vec<&'static str>),
    /// The Win32 shutdown API (`reboot`: restart instead of power off).
    WindowsApi { reboot: bool },
}

/// The steps for `a`: on Windows `wpeutil` is the WinPE tool if found.
fn steps(a: PowerAction, windows: bool, wpeutil: Option<&Path>) -> Vec<Step> {
    let reboot = matches!(a, PowerAction::Reboot);
    if windows {
        let verb = if reboot { "reboot" } else { "shutdown" };
        let mut out: Vec<Step> = wpeutil.map(|p| Step::Run(p.to_path_buf(), vec![verb])).into_iter().collect();
        out.push(Step::WindowsApi { reboot });
        return out;
    }
    let verb = if reboot { "reboot" } else { "poweroff" };
    vec![Step::Run("systemctl".into(), vec![verb]), Step::Run(verb.into(), vec!["-f"])]
}

/// `wpeutil.exe` in the Windows folder (`X:\Windows\System32` on WinPE).
#[cfg(windows)]
fn wpeutil() -> Option<PathBuf> {
    let root = std::env::var_os("SystemRoot").map(PathBuf::from);
    root.into_iter()
        .chain(Some(PathBuf::from(r"X:\Windows")))
        .map(|r| r.join("System32").join("wpeutil.exe"))
        .find(|p| p.is_file())
}

#[cfg(windows)]
mod sys_windows;

fn describe(s: &Step) -> String {
    match s {
        Step::Run(p, args) => format!("`{} {}`", p.display(), args.join(" ")),
        Step::WindowsApi { .. } => "InitiateSystemShutdownExW".into(),
    }
}

/// Power off or reboot now.
pub fn run(a: PowerAction) -> anyhow::Result<()> {
    #[cfg(windows)]
    let steps = steps(a, true, wpeutil().as_deref());
    #[cfg(not(windows))]
    let steps = {
        // sync(2) itself: the live system has no `sync` program.
        imaging::mount::sys::sync();
        steps(a, false, None)
    };
    let mut failures = Vec::new();
    for s in &steps {
        let r: anyhow::Result<()> = match s {
            Step::Run(p, args) => match std::process::Command::new(p).args(args).status() {
                Ok(st) if st.success() => Ok(()),
                Ok(st) => Err(anyhow::anyhow!("{st}")),
                Err(e) => Err(e.into()),
            },
            #[cfg(windows)]
            Step::WindowsApi { reboot } => sys_windows::shutdown(*reboot).map_err(Into::into),
            #[cfg(not(windows))]
            Step::WindowsApi { .. } => Err(anyhow::anyhow!("not on Windows")),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) => failures.push(format!("{}: {e}", describe(s))),
        }
    }
    let verb = if matches!(a, PowerAction::Reboot) { "reboot" } else { "power off" };
    anyhow::bail!("could not {verb}: {}", failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_uses_the_init_system_then_the_forced_tool() {
        assert_eq!(
            steps(PowerAction::PowerOff, false, None),
            vec![Step::Run("systemctl".into(), vec!["poweroff"]), Step::Run("poweroff".into(), vec!["-f"])]
        );
        assert_eq!(
            steps(PowerAction::Reboot, false, Some(Path::new("/ignored"))),
            vec![Step::Run("systemctl".into(), vec!["reboot"]), Step::Run("reboot".into(), vec!["-f"])]
        );
    }

    #[test]
    fn winpe_prefers_wpeutil_then_the_api() {
        let w = Path::new(r"X:\Windows\System32\wpeutil.exe");
        assert_eq!(
            steps(PowerAction::PowerOff, true, Some(w)),
            vec![Step::Run(w.into(), vec!["shutdown"]), Step::WindowsApi { reboot: false }]
        );
        assert_eq!(steps(PowerAction::Reboot, true, Some(w)), vec![Step::Run(w.into(), vec!["reboot"]), Step::WindowsApi { reboot: true }]);
        // A full Windows has no wpeutil: the API alone.
        assert_eq!(steps(PowerAction::Reboot, true, None), vec![Step::WindowsApi { reboot: true }]);
    }
}
