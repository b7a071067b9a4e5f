//! Helpers for integration tests: network namespaces, veth pairs, a bridge,
//! and child processes, each removed on drop (also when a test fails).
//! Everything talks only to loopback or to addresses inside namespaces the
//! test creates.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails the test with the apt package to install if `tool` is missing.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "`{tool}` is missing: apt-get install -y {package}");
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and needs root"
    );
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unique short prefix for names (interface names are limited to 15 bytes).
pub fn tag(n: &str) -> String {
    format!("{n}{}", std::process::id() % 100_000)
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair with one end in `a` (address `addr_a`, may be empty) and the
/// other in `b` (moved there, or left in `b` = None for a hub namespace
/// handled by the caller). Deleting either namespace removes the pair.
pub fn veth(a: &Netns, if_a: &str, addr_a: &str, b: &Netns, if_b: &str, addr_b: &str) {
    sh(&[
        "ip", "link", "add", if_a, "netns", &a.name, "type", "veth", "peer", "name", if_b, "netns",
        &b.name,
    ]);
    for (ns, ifn, addr) in [(a, if_a, addr_a), (b, if_b, addr_b)] {
        if !addr.is_empty() {
            ns.exec(&["ip", "addr", "add", addr, "dev", ifn]);
        }
        ns.exec(&["ip", "link", "set", ifn, "up"]);
    }
}

/// A child process killed (SIGTERM, then SIGKILL) on drop, with its stderr
/// captured to a file.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub what: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path, what: &str) -> Proc {
        let f = std::fs::File::create(log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
            what: what.into(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`, or panics with the log.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "{} exited ({st}) before printing {needle:?}:\n{}",
                        self.what,
                        self.log_text()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not print {needle:?} within {timeout:?}:\n{}",
            self.what,
            self.log_text()
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let t0 = Instant::now();
        let c = self.child.as_mut()?;
        while t0.elapsed() < timeout {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bundle directory with small fake loaders and a kernel/initrd of `size` bytes.
pub fn fake_bundle(dir: &Path, size: usize) {
    for (name, len) in [
        ("vmlinuz", size),
        ("initrd.img", size),
        ("undionly.kpxe", 70_000),
        ("snponly.efi", 200_000),
    ] {
        let data: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        std::fs::write(dir.join(name), data).expect("write bundle file");
    }
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pxe-server")
}
