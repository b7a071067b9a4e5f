//! DHCP (full and proxy mode), TFTP and HTTP against real clients, with the
//! server binary and the clients in separate network namespaces joined by
//! veth pairs and a bridge, and through a real DHCP relay agent (dnsmasq's
//! `--dhcp-relay`) on a router namespace. Needs root, iproute2 and busybox
//! (udhcpc, udhcpd), tftp-hpa, atftp, curl, dnsmasq-base and setpriv
//! (util-linux).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use pxe_server::dhcp::packet::Packet;
use pxe_server::dhcp::MessageType;

/// Runs `f` on a thread that has joined namespace `ns` (setns affects only
/// the calling thread; sockets created there stay in that namespace).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

fn pxe_request(mt: MessageType, mac: [u8; 6], arch: u16) -> Packet {
    let mut p = Packet::client_request(mt, mac, 0x5eed_0001);
    p.set_option(93, arch.to_be_bytes().to_vec());
    p.set_option(94, vec![1, 2, 1]);
    p.set_option(97, vec![0; 17]);
    p.set_option(
        60,
        format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
    );
    p
}

fn start_server(ns: &Netns, args: &[&str], log: &std::path::Path) -> Proc {
    let mut full = vec![server_bin()];
    full.extend_from_slice(args);
    let mut cmd = ns.cmd(&full);
    cmd.env("RUST_LOG", "info");
    Proc::spawn(cmd, log, "pxe-server")
}

#[test]
fn full_mode_with_busybox_udhcpc_tftp_clients_http_and_policy_reload() {
    require_root();
    for (t, p) in [
        ("busybox", "busybox"),
        ("tftp", "tftp-hpa"),
        ("atftp", "atftp"),
        ("curl", "curl"),
    ] {
        require(t, p);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 3_000_000);
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "default = \"rescue\"\ncmdline = \"console=ttyS0\"\n",
    )
    .expect("policy");
    let leases = tmp.path().join("leases.json");

    let srv = Netns::new(&tag("pxs"));
    let cli = Netns::new(&tag("pxc"));
    let (if_s, if_c) = (tag("vs"), tag("vc"));
    veth(&srv, &if_s, "10.77.0.1/24", &cli, &if_c, "");

    let mut server = start_server(
        &srv,
        &[
            "--interface",
            &if_s,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "full",
            "--range",
            "10.77.0.100-10.77.0.150",
            "--lease-file",
            leases.to_str().expect("utf8"),
            "--policy",
            policy.to_str().expect("utf8"),
            "--probe-wait",
            "0.3",
        ],
        &tmp.path().join("server.log"),
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));
    assert!(
        server.log_text().contains("capabilities dropped"),
        "{}",
        server.log_text()
    );
    // HTTP listens on the boot interface's address (and loopback, for
    // `pxe-server status`), not on the machine's other networks.
    // (A veth pair inside the namespace: no dummy module in every kernel.)
    srv.exec(&[
        "ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    srv.exec(&["ip", "addr", "add", "10.77.9.1/24", "dev", "other0"]);
    srv.exec(&["ip", "link", "set", "other0", "up"]);
    srv.exec(&["ip", "link", "set", "other1", "up"]);
    for (url, reachable) in [
        ("http://10.77.0.1:8080/clients", true),
        ("http://127.0.0.1:8080/clients", true),
        ("http://10.77.9.1:8080/clients", false),
    ] {
        let ok = srv
            .cmd(&["curl", "-sS", "--max-time", "5", "-o", "/dev/null", url])
            .status()
            .expect("curl")
            .success();
        assert_eq!(ok, reachable, "{url}: reachable {ok}");
    }

    // busybox udhcpc posing as a BIOS PXE client; its script dumps the environment.
    let script = tmp.path().join("udhcpc.sh");
    let env_out = tmp.path().join("udhcpc.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            env_out.display()
        ),
    )
    .expect("script");
    sh(&["chmod", "+x", script.to_str().expect("utf8")]);
    let t0 = Instant::now();
    cli.exec(&[
        "busybox",
        "udhcpc",
        "-i",
        &if_c,
        "-n",
        "-q",
        "-f",
        "-t",
        "4",
        "-T",
        "1",
        "-V",
        "PXEClient:Arch:00000:UNDI:002001",
        "-x",
        "0x5d:0000",
        "-s",
        script.to_str().expect("utf8"),
    ]);
    let dora = t0.elapsed();
    let env = std::fs::read_to_string(&env_out).expect("udhcpc bound");
    assert!(env.contains("ip=10.77.0.100"), "{env}");
    assert!(env.contains("boot_file=undionly.kpxe"), "{env}");
    assert!(env.contains("siaddr=10.77.0.1"), "{env}");
    assert!(env.contains("serverid=10.77.0.1"), "{env}");
    assert!(dora < Duration::from_secs(3), "DORA took {dora:?}");
    eprintln!("udhcpc DISCOVER..ACK took {dora:?}");
    // Leases are written behind, twice a second.
    let t0 = Instant::now();
    let mut lease_json = String::new();
    while t0.elapsed() < Duration::from_secs(3) && !lease_json.contains("10.77.0.100") {
        std::thread::sleep(Duration::from_millis(100));
        lease_json = std::fs::read_to_string(&leases).unwrap_or_default();
    }
    assert!(
        lease_json.contains("10.77.0.100") && lease_json.contains("bound"),
        "{lease_json}"
    );

    // The client keeps the address for TFTP/HTTP.
    cli.exec(&["ip", "addr", "add", "10.77.0.100/24", "dev", &if_c]);
    let want = std::fs::read(bundle.join("vmlinuz")).expect("read");
    let out = tmp.path().join("out");
    let o = out.to_str().expect("utf8");

    // tftp-hpa (RFC 1350, 512-byte blocks).
    cli.exec(&[
        "tftp",
        "10.77.0.1",
        "-m",
        "binary",
        "-c",
        "get",
        "undionly.kpxe",
        o,
    ]);
    assert_eq!(
        std::fs::read(&out).expect("out"),
        std::fs::read(bundle.join("undionly.kpxe")).expect("in")
    );
    // curl with blksize.
    let t0 = Instant::now();
    cli.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "--tftp-blksize",
        "1468",
        "-o",
        o,
        "tftp://10.77.0.1/vmlinuz",
    ]);
    eprintln!("curl tftp blksize 1468: 3 MB in {:?}", t0.elapsed());
    assert_eq!(std::fs::read(&out).expect("out"), want);
    // atftp with windowsize (RFC 7440).
    let t0 = Instant::now();
    cli.exec(&[
        "atftp",
        "--option",
        "blksize 1428",
        "--option",
        "windowsize 16",
        "--option",
        "tsize 0",
        "-g",
        "-r",
        "vmlinuz",
        "-l",
        o,
        "10.77.0.1",
    ]);
    eprintln!(
        "atftp blksize 1428 windowsize 16: 3 MB in {:?}",
        t0.elapsed()
    );
    assert_eq!(std::fs::read(&out).expect("out"), want);
    // Traversal over TFTP is refused and logged.
    // (curl and tftp-hpa normalise `..` away; atftp sends the name as given.)
    let bad = cli
        .cmd(&[
            "atftp",
            "-g",
            "-r",
            "../../etc/passwd",
            "-l",
            o,
            "10.77.0.1",
        ])
        .output()
        .expect("atftp");
    assert!(!String::from_utf8_lossy(&bad.stderr).is_empty() || !bad.status.success());

    // HTTP: script, range, status report, client list.
    let mac = sh(&[
        "ip",
        "netns",
        "exec",
        &cli.name,
        "cat",
        &format!("/sys/class/net/{if_c}/address"),
    ]);
    let mac = mac.trim();
    let script = cli.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        &format!("http://10.77.0.1:8080/boot/{mac}.ipxe"),
    ]);
    assert!(
        script.starts_with("#!ipxe\nkernel http://10.77.0.1:8080/vmlinuz"),
        "{script}"
    );
    assert!(script.contains("console=ttyS0"), "{script}");
    let part = cli.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-r",
        "100-199",
        "-o",
        o,
        "http://10.77.0.1:8080/vmlinuz",
    ]);
    assert!(part.is_empty());
    assert_eq!(std::fs::read(&out).expect("out"), &want[100..200]);
    cli.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"state":"running","progress":0.25,"message":"restoring"}"#,
        &format!("http://10.77.0.1:8080/clients/{mac}/status"),
    ]);
    let status = srv.exec(&[server_bin(), "status"]);
    assert!(
        status.contains(mac) && status.contains("running 25%") && status.contains("10.77.0.100"),
        "{status}"
    );

    // SIGHUP reloads the policy: the client now gets a job.
    std::fs::write(
        &policy,
        format!("default = \"rescue\"\n[clients.\"{mac}\"]\njob = \"restore lab.img to /dev/sda then poweroff\"\n"),
    )
    .expect("policy");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_for("policy reloaded", Duration::from_secs(20));
    let script = cli.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        &format!(
            "http://10.77.0.1:8080/boot/{}.ipxe",
            mac.replace(':', "%3A")
        ),
    ]);
    assert!(
        script.contains(
            "rescue.job=restore rescue.image=lab.img rescue.disk=/dev/sda rescue.then=poweroff"
        ),
        "{script}"
    );
    // A broken policy keeps the old one.
    std::fs::write(&policy, "default = [").expect("policy");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_for("policy reload failed", Duration::from_secs(20));

    // Renewal, release and reservations with a background udhcpc:
    // `udhcpc_renews_and_releases_a_reserved_address_and_junk_does_not_stop_the_server`.
    let log = server.log_text();
    assert!(log.contains("refused tftp request"), "{log}");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.log_text()
    );
}

#[test]
fn proxy_mode_beside_busybox_udhcpd() {
    require_root();
    require("busybox", "busybox");
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 10_000);

    let hub = Netns::new(&tag("pxh"));
    let dhcp = Netns::new(&tag("pxd"));
    let pxe = Netns::new(&tag("pxp"));
    let cli = Netns::new(&tag("pxk"));
    hub.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
    hub.exec(&["ip", "link", "set", "br0", "up"]);
    for (ns, name, addr) in [
        (&dhcp, "d", "10.78.0.1/24"),
        (&pxe, "p", "10.78.0.2/24"),
        (&cli, "k", ""),
    ] {
        let inner = tag(&format!("i{name}"));
        let outer = tag(&format!("o{name}"));
        veth(ns, &inner, addr, &hub, &outer, "");
        hub.exec(&["ip", "link", "set", &outer, "master", "br0"]);
    }
    let (if_d, if_p, if_k) = (tag("id"), tag("ip"), tag("ik"));

    let conf = tmp.path().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.78.0.100\nend 10.78.0.150\ninterface {if_d}\nlease_file {}\noption subnet 255.255.255.0\n",
            tmp.path().join("udhcpd.leases").display()
        ),
    )
    .expect("conf");
    std::fs::write(tmp.path().join("udhcpd.leases"), b"").expect("leases");
    let mut udhcpd = Proc::spawn(
        dhcp.cmd(&[
            "busybox",
            "udhcpd",
            "-f",
            "-a",
            "300",
            conf.to_str().expect("utf8"),
        ]),
        &tmp.path().join("udhcpd.log"),
        "udhcpd",
    );
    udhcpd.wait_for("started", Duration::from_secs(20));

    // Port taken: a second DHCP server in the same namespace is named.
    let mut clash = start_server(
        &dhcp,
        &[
            "--interface",
            &if_d,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "proxy",
            "--probe-wait",
            "0.2",
        ],
        &tmp.path().join("clash.log"),
    );
    assert_eq!(clash.wait_exit(Duration::from_secs(10)), Some(1));
    let msg = clash.log_text();
    assert!(
        msg.contains("port 67/udp is already in use by busybox"),
        "{msg}"
    );

    // Default mode: detects udhcpd and becomes proxyDHCP.
    let mut server = start_server(
        &pxe,
        &[
            "--interface",
            &if_p,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--probe-wait",
            "2",
        ],
        &tmp.path().join("server.log"),
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));
    let log = server.log_text();
    assert!(
        log.contains("another DHCP server answered") && log.contains("10.78.0.1"),
        "{log}"
    );

    let mac = [0x52, 0x54, 0, 0x77, 0, 1];
    let ifk = if_k.clone();
    let (offers, ack) = in_netns(&cli.name, move || {
        let sock =
            pxe_server::netif::udp_on_interface("test client", &ifk, 68, true).expect("socket");
        let d = pxe_request(MessageType::Discover, mac, 0);
        sock.send_to(&d.to_bytes(), (Ipv4Addr::BROADCAST, 67))
            .expect("send");
        let mut offers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if let Ok(p) = Packet::parse(&buf[..n]) {
                if p.xid == d.xid && p.message_type() == Some(MessageType::Offer) {
                    offers.push(p);
                }
            }
        }
        // Port 4011 request, as a PXE ROM does after getting its address.
        std::process::Command::new("ip")
            .args(["addr", "add", "10.78.0.50/24", "dev", &ifk])
            .status()
            .expect("ip addr");
        let mut r = pxe_request(MessageType::Request, mac, 0);
        r.ciaddr = Ipv4Addr::new(10, 78, 0, 50);
        let u = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 78, 0, 50), 0))
            .expect("bind");
        u.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        u.send_to(&r.to_bytes(), (Ipv4Addr::new(10, 78, 0, 2), 4011))
            .expect("send");
        let ack = u
            .recv_from(&mut buf)
            .ok()
            .and_then(|(n, _)| Packet::parse(&buf[..n]).ok());
        (offers, ack)
    });
    let real = offers
        .iter()
        .find(|o| o.server_id() == Some(Ipv4Addr::new(10, 78, 0, 1)));
    let proxy = offers
        .iter()
        .find(|o| o.server_id() == Some(Ipv4Addr::new(10, 78, 0, 2)));
    let real = real.unwrap_or_else(|| panic!("no offer from udhcpd: {offers:?}"));
    let proxy =
        proxy.unwrap_or_else(|| panic!("no proxy offer: {offers:?}\n{}", server.log_text()));
    assert!(!real.yiaddr.is_unspecified());
    assert_eq!(
        proxy.yiaddr,
        Ipv4Addr::UNSPECIFIED,
        "proxyDHCP must never give an address"
    );
    assert_eq!(proxy.file, b"undionly.kpxe");
    assert_eq!(proxy.vendor_class().as_deref(), Some("PXEClient"));
    assert_eq!(proxy.option(43), Some(&[6, 1, 8, 255][..]));
    let ack = ack.unwrap_or_else(|| panic!("no 4011 ACK\n{}", server.log_text()));
    assert_eq!(ack.message_type(), Some(MessageType::Ack));
    assert_eq!(ack.file, b"undionly.kpxe");
    assert!(ack.yiaddr.is_unspecified());
    let ifp = if_p.clone();
    let _ = ifp;
}

#[test]
fn auto_mode_without_dhcp_server_refuses_with_hint_and_start_errors_are_clear() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 1000);
    let a = Netns::new(&tag("pxa"));
    let b = Netns::new(&tag("pxb"));
    let (if_a, if_b) = (tag("va"), tag("vb"));
    veth(&a, &if_a, "10.79.0.1/24", &b, &if_b, "");
    let mut p = start_server(
        &a,
        &[
            "--interface",
            &if_a,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--probe-wait",
            "0.5",
        ],
        &tmp.path().join("a.log"),
    );
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(3),
        "{}",
        p.log_text()
    );
    let t = p.log_text();
    assert!(
        t.contains("no DHCP server answered") && t.contains("--mode full --range"),
        "{t}"
    );

    // Interface without IPv4, missing interface, incomplete bundle, lease
    // directory that cannot be created, range outside the subnet.
    let afile = tmp.path().join("afile");
    std::fs::write(&afile, b"a regular file").expect("write");
    let under_file = afile.join("x.json");
    let leases = tmp.path().join("leases.json");
    let full = |range: &'static str, lease: &std::path::Path| -> Vec<String> {
        [
            "--interface",
            if_a.as_str(),
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "full",
            "--range",
            range,
            "--probe-wait",
            "0.1",
            "--lease-file",
            lease.to_str().expect("utf8"),
        ]
        .map(String::from)
        .to_vec()
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            strings(&["--interface", &if_b, "--bundle", bundle.to_str().expect("utf8")]),
            strings(&["has no IPv4 address", "hint: give"]),
        ),
        (
            strings(&["--interface", "nosuch0", "--bundle", bundle.to_str().expect("utf8")]),
            strings(&["interface nosuch0 does not exist", "hint: pass an interface"]),
        ),
        (
            strings(&["--interface", &if_a, "--bundle", tmp.path().to_str().expect("utf8")]),
            strings(&["missing: vmlinuz, initrd.img, undionly.kpxe, snponly.efi or ipxe.efi"]),
        ),
        (
            full("10.79.0.100-10.79.0.150", &under_file),
            vec![
                format!("cannot create lease directory {}", afile.display()),
                "hint: pass --lease-file PATH".into(),
            ],
        ),
        (
            full("10.80.0.1-10.80.0.9", &leases),
            vec![
                format!("range 10.80.0.1-10.80.0.9 is not inside {if_a}'s subnet 10.79.0.1/255.255.255.0"),
                "hint: pick a range inside the interface's subnet".into(),
            ],
        ),
    ];
    for (i, (args, wants)) in cases.iter().enumerate() {
        let ns = if i == 0 { &b } else { &a };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = start_server(ns, &args, &tmp.path().join(format!("c{i}.log")));
        let code = p.wait_exit(Duration::from_secs(10));
        let t = p.log_text();
        assert_eq!(code, Some(1), "{args:?}: {t}");
        for want in wants {
            assert!(t.contains(want.as_str()), "{args:?}: {want:?} not in:\n{t}");
        }
    }
    assert!(afile.is_file() && !leases.exists());

    // Port 67 held by a plain dnsmasq: the error names it, with dnsmasq's hint.
    require("dnsmasq", "dnsmasq-base");
    let mut dnsmasq = Proc::spawn(
        a.cmd(&[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--dhcp-range=10.79.0.100,10.79.0.150,255.255.255.0,10m",
            "--log-facility=-",
            &format!("--dhcp-leasefile={}", tmp.path().join("dnsmasq.leases").display()),
        ]),
        &tmp.path().join("dnsmasq.log"),
        "dnsmasq",
    );
    dnsmasq.wait_for("DHCP, IP range", Duration::from_secs(10));
    let mut p = start_server(
        &a,
        &["--interface", &if_a, "--bundle", bundle.to_str().expect("utf8"), "--mode", "proxy", "--probe-wait", "0.2"],
        &tmp.path().join("dnsmasq-clash.log"),
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "{}", p.log_text());
    let t = p.log_text();
    assert!(
        t.contains("DHCP port 67/udp is already in use by dnsmasq (pid ")
            && t.contains("hint: stop dnsmasq (`systemctl stop dnsmasq`) or run it with `port=0`"),
        "{t}"
    );
}

/// client ns --10.81.1.0/24-- router ns (dnsmasq --dhcp-relay, forwarding)
/// --10.81.0.0/24-- server ns. Dropping it stops the relay and removes the
/// namespaces (and their veth pairs).
struct RelayLab {
    _relay_agent: Proc,
    srv: Netns,
    cli: Netns,
    _router: Netns,
    if_s: String,
    if_c: String,
}

fn relay_lab(tmp: &std::path::Path, name: &str) -> RelayLab {
    require_root();
    require("dnsmasq", "dnsmasq-base");
    let srv = Netns::new(&tag(&format!("{name}s")));
    let router = Netns::new(&tag(&format!("{name}r")));
    let cli = Netns::new(&tag(&format!("{name}c")));
    let (if_s, if_rs, if_rc, if_c) = (tag("rls"), tag("rlrs"), tag("rlrc"), tag("rlc"));
    veth(&srv, &if_s, "10.81.0.2/24", &router, &if_rs, "10.81.0.1/24");
    veth(&router, &if_rc, "10.81.1.1/24", &cli, &if_c, "");
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    srv.exec(&["ip", "route", "add", "10.81.1.0/24", "via", "10.81.0.1"]);
    // dnsmasq as a relay agent only: no DNS (port 0), no address ranges;
    // requests arriving on 10.81.1.1's interface go to pxe-server with
    // giaddr 10.81.1.1, replies come back to it on port 67.
    let mut relay_agent = Proc::spawn(
        router.cmd(&[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--dhcp-relay=10.81.1.1,10.81.0.2",
            "--log-dhcp",
            "--log-facility=-",
            &format!("--dhcp-leasefile={}", tmp.join("relay.leases").display()),
        ]),
        &tmp.join("relay.log"),
        "dnsmasq --dhcp-relay",
    );
    relay_agent.wait_for("DHCP relay", Duration::from_secs(10));
    RelayLab {
        _relay_agent: relay_agent,
        srv,
        cli,
        _router: router,
        if_s,
        if_c,
    }
}

#[test]
fn relayed_full_mode_hands_out_the_relay_subnet_and_boots_through_the_router() {
    require("busybox", "busybox");
    require("curl", "curl");
    require("tftp", "tftp-hpa");
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 100_000);
    let lab = relay_lab(tmp.path(), "prf");
    let leases = tmp.path().join("leases.json");
    let mut server = start_server(
        &lab.srv,
        &[
            "--interface",
            &lab.if_s,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "full",
            "--range",
            "10.81.0.100-10.81.0.150",
            "--range",
            "10.81.1.100-10.81.1.150/24",
            "--lease-file",
            leases.to_str().expect("utf8"),
            "--probe-wait",
            "0.3",
        ],
        &tmp.path().join("server.log"),
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));

    // busybox udhcpc as a BIOS PXE client on the far side of the relay.
    let script = tmp.path().join("udhcpc.sh");
    let env_out = tmp.path().join("udhcpc.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            env_out.display()
        ),
    )
    .expect("script");
    sh(&["chmod", "+x", script.to_str().expect("utf8")]);
    let out = lab
        .cli
        .cmd(&[
            "busybox",
            "udhcpc",
            "-i",
            &lab.if_c,
            "-n",
            "-q",
            "-f",
            "-t",
            "5",
            "-T",
            "1",
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
            "-x",
            "0x5d:0000",
            "-s",
            script.to_str().expect("utf8"),
        ])
        .output()
        .expect("udhcpc");
    let env = std::fs::read_to_string(&env_out).unwrap_or_else(|_| {
        panic!(
            "udhcpc got no lease through the relay: {}\nrelay log:\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            lab._relay_agent.log_text(),
            server.log_text()
        )
    });
    for want in [
        "ip=10.81.1.100",
        "subnet=255.255.255.0",
        "router=10.81.1.1",
        "serverid=10.81.0.2",
        "siaddr=10.81.0.2",
        "boot_file=undionly.kpxe",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing:\n{env}");
    }
    // The DISCOVER and REQUEST went through the relay agent.
    let relay_log = lab._relay_agent.log_text();
    assert!(
        relay_log
            .matches("DHCP relay at 10.81.1.1 -> 10.81.0.2")
            .count()
            >= 2,
        "{relay_log}"
    );

    // The client boots through the router: HTTP script and TFTP loader.
    lab.cli
        .exec(&["ip", "addr", "add", "10.81.1.100/24", "dev", &lab.if_c]);
    lab.cli
        .exec(&["ip", "route", "add", "default", "via", "10.81.1.1"]);
    let mac = lab
        .cli
        .exec(&["cat", &format!("/sys/class/net/{}/address", lab.if_c)]);
    let mac = mac.trim();
    let script = lab.cli.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        &format!("http://10.81.0.2:8080/boot/{mac}.ipxe"),
    ]);
    assert!(
        script.contains("\nkernel http://10.81.0.2:8080/vmlinuz ")
            && script.contains("rescue.server=http://10.81.0.2:8080"),
        "{script}"
    );
    let o = tmp.path().join("out");
    lab.cli.exec(&[
        "tftp",
        "10.81.0.2",
        "-m",
        "binary",
        "-c",
        "get",
        "undionly.kpxe",
        o.to_str().expect("utf8"),
    ]);
    assert_eq!(
        std::fs::read(&o).expect("out"),
        std::fs::read(bundle.join("undionly.kpxe")).expect("in")
    );
    let t0 = Instant::now();
    let mut lease_json = String::new();
    while t0.elapsed() < Duration::from_secs(3) && !lease_json.contains("10.81.1.100") {
        std::thread::sleep(Duration::from_millis(100));
        lease_json = std::fs::read_to_string(&leases).unwrap_or_default();
    }
    assert!(lease_json.contains("10.81.1.100"), "{lease_json}");
}

#[test]
fn relayed_proxy_offer_and_port_4011_ack_reach_the_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 10_000);
    let lab = relay_lab(tmp.path(), "prp");
    let mut server = start_server(
        &lab.srv,
        &[
            "--interface",
            &lab.if_s,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "proxy",
            "--probe-wait",
            "0.3",
        ],
        &tmp.path().join("server.log"),
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));

    let mac = [0x52, 0x54, 0, 0x81, 0, 1];
    let ifc = lab.if_c.clone();
    let (offer, ack) = in_netns(&lab.cli.name, move || {
        let sock =
            pxe_server::netif::udp_on_interface("test client", &ifc, 68, true).expect("socket");
        let d = pxe_request(MessageType::Discover, mac, 0);
        sock.send_to(&d.to_bytes(), (Ipv4Addr::BROADCAST, 67))
            .expect("send");
        let mut buf = [0u8; 1500];
        let mut offer = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if let Ok(p) = Packet::parse(&buf[..n]) {
                if p.xid == d.xid && p.message_type() == Some(MessageType::Offer) {
                    offer = Some(p);
                    break;
                }
            }
        }
        // The PXE ROM's next step: a unicast request to port 4011 of the
        // boot server, routed through the relay's router.
        for args in [
            vec!["addr", "add", "10.81.1.50/24", "dev", &ifc],
            vec!["route", "add", "default", "via", "10.81.1.1"],
        ] {
            std::process::Command::new("ip")
                .args(&args)
                .status()
                .expect("ip");
        }
        let mut r = pxe_request(MessageType::Request, mac, 0);
        r.ciaddr = Ipv4Addr::new(10, 81, 1, 50);
        let u = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 81, 1, 50), 0))
            .expect("bind");
        u.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        u.send_to(&r.to_bytes(), (Ipv4Addr::new(10, 81, 0, 2), 4011))
            .expect("send");
        let ack = u
            .recv_from(&mut buf)
            .ok()
            .and_then(|(n, _)| Packet::parse(&buf[..n]).ok());
        (offer, ack)
    });
    let offer = offer.unwrap_or_else(|| {
        panic!(
            "no proxy offer through the relay\nrelay log:\n{}\nserver log:\n{}",
            lab._relay_agent.log_text(),
            server.log_text()
        )
    });
    assert_eq!(offer.giaddr, Ipv4Addr::new(10, 81, 1, 1));
    assert_eq!(
        offer.yiaddr,
        Ipv4Addr::UNSPECIFIED,
        "proxyDHCP never gives an address"
    );
    assert_eq!(offer.siaddr, Ipv4Addr::new(10, 81, 0, 2));
    assert_eq!(offer.server_id(), Some(Ipv4Addr::new(10, 81, 0, 2)));
    assert_eq!(offer.file, b"undionly.kpxe");
    assert_eq!(offer.vendor_class().as_deref(), Some("PXEClient"));
    let ack = ack.unwrap_or_else(|| panic!("no 4011 ACK\n{}", server.log_text()));
    assert_eq!(ack.message_type(), Some(MessageType::Ack));
    assert_eq!(ack.file, b"undionly.kpxe");
}

/// A udhcpc script that configures the address it is given (so renewals
/// can go unicast from it), dumps the environment of the last bound/renew
/// to `dir/env` and then appends the event to `dir/events` (last, so an
/// event seen there is complete: after a "renew" the address, flushed and
/// added again, is in place).
fn udhcpc_script(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$1\" in\n\
             bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"; env > {d}/env.tmp; mv {d}/env.tmp {d}/env ;;\n\
             deconfig) ip addr flush dev \"$interface\" ;;\n\
             esac\n\
             echo \"$1\" >> {d}/events\n\
             exit 0\n",
            d = dir.display()
        ),
    )
    .expect("script");
    sh(&["chmod", "755", script.to_str().expect("utf8")]);
    script
}

/// busybox udhcpc arguments for a BIOS PXE client on `iface`.
fn udhcpc_args<'a>(iface: &'a str, script: &'a std::path::Path, quit: bool) -> Vec<&'a str> {
    let mut v = vec![
        "busybox",
        "udhcpc",
        "-i",
        iface,
        "-f",
        "-n",
        "-t",
        "4",
        "-T",
        "1",
        "-V",
        "PXEClient:Arch:00000:UNDI:002001",
        "-x",
        "0x5d:0000",
        "-s",
        script.to_str().expect("utf8"),
    ];
    if quit {
        v.push("-q");
    }
    v
}

/// One DISCOVER..ACK with busybox udhcpc (exits once bound); the address it got.
fn udhcpc_once(ns: &Netns, iface: &str, dir: &std::path::Path) -> String {
    let _ = std::fs::remove_file(dir.join("env"));
    let script = udhcpc_script(dir);
    let out = ns
        .cmd(&udhcpc_args(iface, &script, true))
        .output()
        .expect("udhcpc");
    let env = std::fs::read_to_string(dir.join("env")).unwrap_or_else(|_| {
        panic!(
            "udhcpc got no lease: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    env_value(&env, "ip")
}

fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{env}"))
        .to_string()
}

/// (state, expires) of `ip` in the lease file, if there.
fn lease_of(file: &std::path::Path, ip: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.as_array()?.iter().find_map(|l| {
        (l["ip"] == ip).then(|| {
            (
                l["state"].as_str().unwrap_or("").to_string(),
                l["expires"].as_u64().unwrap_or(0),
            )
        })
    })
}

/// Polls `f` every 100 ms for up to `limit`; true once it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `CapEff`, `CapPrm` and `Uid` lines of /proc/PID/status.
fn caps_of(pid: i32) -> (String, String, String) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("CapEff:"), field("CapPrm:"), field("Uid:"))
}

fn set_mac(ns: &Netns, iface: &str, mac: &str) {
    ns.exec(&["ip", "link", "set", iface, "down"]);
    ns.exec(&["ip", "link", "set", iface, "address", mac]);
    ns.exec(&["ip", "link", "set", iface, "up"]);
}

const NO_CAPS: &str = "0000000000000000";

/// busybox udhcpc against full mode: a reserved address (from the policy,
/// then changed by SIGHUP), renewal (SIGUSR1) and release (SIGUSR2) seen in
/// the lease file; then junk to ports 67, 4011 and 69, an Itanium DISCOVER
/// and HTTP traversal, all logged (junk rate-limited) and refused, after
/// which a fresh DORA still works.
#[test]
fn udhcpc_renews_and_releases_a_reserved_address_and_junk_does_not_stop_the_server() {
    require_root();
    require("busybox", "busybox");
    require("curl", "curl");
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 10_000);
    let (mac_a, mac_b) = ("52:54:00:76:00:0a", "52:54:00:76:00:0b");
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("default = \"rescue\"\n[clients.\"{mac_a}\"]\nip = \"10.76.0.120\"\n"),
    )
    .expect("policy");
    let leases = tmp.path().join("leases.json");
    let srv = Netns::new(&tag("pxrs"));
    let cli = Netns::new(&tag("pxrc"));
    let (if_s, if_c) = (tag("vrs"), tag("vrc"));
    veth(&srv, &if_s, "10.76.0.1/24", &cli, &if_c, "");
    set_mac(&cli, &if_c, mac_a);
    let mut server = start_server(
        &srv,
        &[
            "--interface",
            &if_s,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "full",
            "--range",
            "10.76.0.100-10.76.0.150",
            "--lease-file",
            leases.to_str().expect("utf8"),
            "--policy",
            policy.to_str().expect("utf8"),
            "--probe-wait",
            "0.3",
        ],
        &tmp.path().join("server.log"),
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));
    // Started as root, it keeps no capability once its sockets are bound.
    let (eff, prm, _) = caps_of(server.pid());
    assert_eq!((eff.as_str(), prm.as_str()), (NO_CAPS, NO_CAPS));

    // udhcpc in the background, bound to the reserved address.
    let dir = tmp.path().join("bg");
    std::fs::create_dir(&dir).expect("mkdir");
    let script = udhcpc_script(&dir);
    let udhcpc = Proc::spawn(
        cli.cmd(&udhcpc_args(&if_c, &script, false)),
        &tmp.path().join("udhcpc.log"),
        "udhcpc",
    );
    let env = dir.join("env");
    assert!(
        eventually(Duration::from_secs(30), || env.exists()),
        "udhcpc not bound:\n{}\n{}",
        udhcpc.log_text(),
        server.log_text()
    );
    let got = env_value(&std::fs::read_to_string(&env).expect("env"), "ip");
    assert_eq!(got, "10.76.0.120", "the reserved address");
    let mut first = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            first = lease_of(&leases, "10.76.0.120");
            first.is_some()
        }),
        "lease not written"
    );
    let (state, expires) = first.expect("lease");
    assert_eq!(state, "bound");

    // SIGUSR1: renew; the lease's expiry moves on.
    std::thread::sleep(Duration::from_millis(1200));
    udhcpc.signal(nix::sys::signal::Signal::SIGUSR1);
    let events = dir.join("events");
    let mut renewed = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            renewed = lease_of(&leases, "10.76.0.120");
            std::fs::read_to_string(&events).unwrap_or_default().contains("renew")
                && renewed.as_ref().is_some_and(|(_, e)| *e > expires)
        }),
        "no renewal: {renewed:?} (was {expires})\nudhcpc:\n{}\nserver:\n{}",
        udhcpc.log_text(),
        server.log_text()
    );

    // Junk to 67, 4011 and 69 from the bound client, an Itanium DISCOVER.
    let sent = in_netns(&cli.name, || {
        let u = std::net::UdpSocket::bind("10.76.0.120:0").expect("bind");
        let junk = b"\x01\x01\x06\x00not a dhcp packet";
        for _ in 0..30 {
            u.send_to(junk, "10.76.0.1:67").expect("send");
        }
        for port in [4011, 69] {
            for _ in 0..5 {
                u.send_to(b"\xff\xff junk", ("10.76.0.1", port)).expect("send");
            }
        }
        let itanium = pxe_request(MessageType::Discover, [0x52, 0x54, 0, 0x76, 0, 0x99], 2);
        u.send_to(&itanium.to_bytes(), "10.76.0.1:67").expect("send");
        std::thread::sleep(Duration::from_millis(1100));
        u.send_to(junk, "10.76.0.1:67").expect("send");
        true
    });
    assert!(sent);
    for (url, what) in [
        ("http://10.76.0.1:8080/../etc/passwd", "dot-dot"),
        ("http://10.76.0.1:8080/%2e%2e/%2e%2e/etc/passwd", "percent-encoded dot-dot"),
    ] {
        let code = cli.exec(&[
            "curl", "-s", "--path-as-is", "--max-time", "5", "-o", "/dev/null", "-w",
            "%{http_code}", url,
        ]);
        assert_eq!(code, "403", "{what}");
    }
    let mut log = String::new();
    assert!(
        eventually(Duration::from_secs(15), || {
            log = server.log_text();
            log.contains("held_back=29") && log.matches("dropping malformed tftp packet").count() == 1
        }),
        "{log}"
    );
    let dhcp_junk: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dropping malformed dhcp packet"))
        .collect();
    // 67: the first, then one a second later with the 29 held back; 4011: one.
    assert_eq!(dhcp_junk.len(), 3, "{dhcp_junk:#?}");
    assert!(
        log.lines().any(|l| l.contains("not answering boot request")
            && l.contains("Itanium EFI (2)")
            && l.contains("52:54:00:76:00:99")),
        "{log}"
    );
    assert_eq!(log.matches("refused http request").count(), 2, "{log}");

    // SIGUSR2: release; the lease is gone from the file.
    udhcpc.signal(nix::sys::signal::Signal::SIGUSR2);
    assert!(
        eventually(Duration::from_secs(20), || lease_of(&leases, "10.76.0.120").is_none()),
        "lease still there after release:\n{}",
        std::fs::read_to_string(&leases).unwrap_or_default()
    );
    drop(udhcpc);

    // A fresh DORA after all that: the reserved address again; another MAC
    // never gets it.
    let once = tmp.path().join("once");
    std::fs::create_dir(&once).expect("mkdir");
    assert_eq!(udhcpc_once(&cli, &if_c, &once), "10.76.0.120");
    set_mac(&cli, &if_c, mac_b);
    let other = udhcpc_once(&cli, &if_c, &once);
    assert!(other != "10.76.0.120" && other.starts_with("10.76.0."), "{other}");

    // SIGHUP applies a new reservation; one outside the range is refused.
    std::fs::write(
        &policy,
        format!("[clients.\"{mac_b}\"]\nip = \"10.76.0.121\"\n"),
    )
    .expect("policy");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_for("policy reloaded", Duration::from_secs(20));
    assert_eq!(udhcpc_once(&cli, &if_c, &once), "10.76.0.121");
    std::fs::write(
        &policy,
        format!("[clients.\"{mac_b}\"]\nip = \"10.76.1.121\"\n"),
    )
    .expect("policy");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_for("policy reload failed", Duration::from_secs(20));
    assert!(
        server
            .log_text()
            .contains(&format!("reservation 10.76.1.121 for {mac_b} is outside the range")),
        "{}",
        server.log_text()
    );
    assert_eq!(udhcpc_once(&cli, &if_c, &once), "10.76.0.121", "old reservation kept");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

/// `--images`: ranges, HEAD and confinement of /images/ over HTTP, and the
/// policy check of relative restore images; `--max-blksize 65464` with
/// curl's TFTP client.
#[test]
fn images_over_http_and_tftp_block_size_65464() {
    require_root();
    require("curl", "curl");
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 1_000_000);
    let images = tmp.path().join("images");
    std::fs::create_dir_all(images.join("lab")).expect("mkdir");
    let disk: Vec<u8> = (0..1_048_576u32).map(|i| (i % 253) as u8 ^ (i >> 16) as u8).collect();
    std::fs::write(images.join("lab/disk.img"), &disk).expect("write");
    std::fs::write(tmp.path().join("secret"), b"not for clients").expect("write");
    std::os::unix::fs::symlink(tmp.path().join("secret"), images.join("out.img")).expect("symlink");
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[clients.\"52:54:00:75:00:01\"]\njob = \"restore lab/disk.img to /dev/sda\"\n\
         [clients.\"52:54:00:75:00:02\"]\njob = \"restore lab/gone.img to /dev/sda\"\n\
         [clients.\"52:54:00:75:00:03\"]\njob = \"restore http://nas/x.img to /dev/sda\"\n",
    )
    .expect("policy");
    let srv = Netns::new(&tag("pxis"));
    let cli = Netns::new(&tag("pxic"));
    let (if_s, if_c) = (tag("vis"), tag("vic"));
    veth(&srv, &if_s, "10.75.0.1/24", &cli, &if_c, "10.75.0.2/24");
    let mut server = start_server(
        &srv,
        &[
            "--interface",
            &if_s,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "full",
            "--range",
            "10.75.0.100-10.75.0.150",
            "--lease-file",
            tmp.path().join("leases.json").to_str().expect("utf8"),
            "--policy",
            policy.to_str().expect("utf8"),
            "--images",
            images.to_str().expect("utf8"),
            "--max-blksize",
            "65464",
            "--probe-wait",
            "0.3",
        ],
        &tmp.path().join("server.log"),
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));
    let log = server.log_text();
    assert!(
        log.contains("client 52:54:00:75:00:02: restore image \"lab/gone.img\" cannot be served")
            && !log.contains("disk.img")
            && !log.contains("x.img"),
        "{log}"
    );

    let out = tmp.path().join("out");
    let o = out.to_str().expect("utf8");
    let curl = |args: &[&str]| -> String {
        let mut v = vec!["curl", "-s", "--max-time", "30"];
        v.extend_from_slice(args);
        cli.exec(&v)
    };
    let url = "http://10.75.0.1:8080/images/lab/disk.img";
    let code = curl(&["-r", "1000-204799", "-o", o, "-w", "%{http_code}", url]);
    assert_eq!(code, "206");
    assert_eq!(std::fs::read(&out).expect("out"), &disk[1000..204800]);
    let code = curl(&["-r", "-100", "-o", o, "-w", "%{http_code}", url]);
    assert_eq!(code, "206");
    assert_eq!(std::fs::read(&out).expect("out"), &disk[disk.len() - 100..]);
    let code = curl(&["-o", o, "-w", "%{http_code}", url]);
    assert_eq!(code, "200");
    assert_eq!(std::fs::read(&out).expect("out"), disk);
    let head = curl(&["-I", url]);
    assert!(
        head.starts_with("HTTP/1.1 200")
            && head.contains("Content-Length: 1048576")
            && head.contains("Accept-Ranges: bytes"),
        "{head}"
    );
    for (path, want) in [
        ("/images/../vmlinuz", "403"),
        ("/images/%2e%2e/secret", "403"),
        ("/images/lab/%2E%2E/../secret", "403"),
        ("/images/out.img", "403"),
        ("/images/lab/gone.img", "404"),
        ("/images/lab", "404"),
    ] {
        let code = curl(&[
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://10.75.0.1:8080{path}"),
        ]);
        assert_eq!(code, want, "{path}");
    }
    assert_eq!(server.log_text().matches("refused http request").count(), 4);

    // TFTP with 65464-byte blocks (IP-fragmented on this 1500-byte MTU link).
    curl(&["--tftp-blksize", "65464", "-o", o, "tftp://10.75.0.1/vmlinuz"]);
    assert_eq!(
        std::fs::read(&out).expect("out"),
        std::fs::read(bundle.join("vmlinuz")).expect("in")
    );
    let mut log = String::new();
    assert!(
        eventually(Duration::from_secs(15), || {
            log = server.log_text();
            log.lines()
                .any(|l| l.contains("tftp transfer done") && l.contains("blksize=65464"))
        }),
        "{log}"
    );
}

/// Started by an unprivileged user holding only CAP_NET_BIND_SERVICE and
/// CAP_NET_RAW (ambient), the server binds, serves DHCP and then holds no
/// capability; the default lease path, not writable by that user, is a
/// clear error naming --lease-file.
#[test]
fn unprivileged_user_with_two_capabilities_serves_and_drops_them() {
    require_root();
    require("busybox", "busybox");
    require("setpriv", "util-linux");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Readable by the unprivileged user: the binary, the bundle.
    sh(&["chmod", "755", tmp.path().to_str().expect("utf8")]);
    let bin = tmp.path().join("pxe-server");
    std::fs::copy(server_bin(), &bin).expect("copy binary");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    fake_bundle(&bundle, 10_000);
    let lease_dir = tmp.path().join("leases");
    std::fs::create_dir(&lease_dir).expect("mkdir");
    sh(&["chown", "65534:65534", lease_dir.to_str().expect("utf8")]);
    let leases = lease_dir.join("leases.json");
    let srv = Netns::new(&tag("pxus"));
    let cli = Netns::new(&tag("pxuc"));
    let (if_s, if_c) = (tag("vus"), tag("vuc"));
    veth(&srv, &if_s, "10.74.0.1/24", &cli, &if_c, "");
    let unprivileged = |extra: &[&str], log: &str| {
        let mut args = vec![
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps",
            "+net_bind_service,+net_raw",
            "--ambient-caps",
            "+net_bind_service,+net_raw",
            bin.to_str().expect("utf8"),
            "--interface",
            &if_s,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--mode",
            "full",
            "--range",
            "10.74.0.100-10.74.0.150",
            "--probe-wait",
            "0.3",
        ];
        args.extend_from_slice(extra);
        let mut cmd = srv.cmd(&args);
        cmd.env("RUST_LOG", "info");
        Proc::spawn(cmd, &tmp.path().join(log), "pxe-server as nobody")
    };

    // The default lease path (/var/lib/pxe-server) is root's.
    let mut p = unprivileged(&[], "default-leases.log");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "{}", p.log_text());
    let t = p.log_text();
    assert!(
        t.contains("lease file /var/lib/pxe-server/leases.json is not writable by this user")
            && t.contains("hint: pass --lease-file PATH"),
        "{t}"
    );

    let mut server = unprivileged(
        &["--lease-file", leases.to_str().expect("utf8")],
        "server.log",
    );
    server.wait_for("pxe-server ready", Duration::from_secs(20));
    let log = server.log_text();
    assert!(log.contains("capabilities dropped"), "{log}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid())).expect("comm");
    assert_eq!(comm.trim(), "pxe-server");
    let (eff, prm, uid) = caps_of(server.pid());
    assert_eq!((eff.as_str(), prm.as_str()), (NO_CAPS, NO_CAPS));
    assert!(uid.starts_with("65534"), "{uid}");

    let dir = tmp.path().join("c");
    std::fs::create_dir(&dir).expect("mkdir");
    assert_eq!(udhcpc_once(&cli, &if_c, &dir), "10.74.0.100");
    assert!(
        eventually(Duration::from_secs(15), || lease_of(&leases, "10.74.0.100").is_some()),
        "lease not written by the unprivileged server:\n{}",
        server.log_text()
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0), "{}", server.log_text());
}
