//! DHCP (full and proxy mode), TFTP and HTTP against real clients, with the
//! server binary and the clients in separate network namespaces joined by
//! veth pairs and a bridge, and through a real DHCP relay agent (dnsmasq's
//! `--dhcp-relay`) on a router namespace. Needs root, iproute2 and busybox
//! (udhcpc, udhcpd), tftp-hpa, atftp, curl and dnsmasq-base.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use pxe_server::dhcp::packet::{Packet, BOOTREQUEST, FLAG_BROADCAST};
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
    let mut chaddr = [0u8; 16];
    chaddr[..6].copy_from_slice(&mac);
    let mut p = Packet {
        op: BOOTREQUEST,
        htype: 1,
        hlen: 6,
        hops: 0,
        xid: 0x5eed_0001,
        secs: 0,
        flags: FLAG_BROADCAST,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr,
        sname: vec![],
        file: vec![],
        options: vec![],
    };
    p.set_option(53, vec![mt as u8]);
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
    server.wait_for("policy reloaded", Duration::from_secs(5));
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
    server.wait_for("policy reload failed", Duration::from_secs(5));

    // Renewal (unicast, ciaddr set) and release via udhcpc.
    cli.exec(&["ip", "addr", "flush", "dev", &if_c]);
    let log = server.log_text();
    assert!(log.contains("refused tftp request"), "{log}");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(5)),
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
    udhcpd.wait_for("started", Duration::from_secs(5));

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

    // Interface without IPv4, missing interface, incomplete bundle, range outside subnet.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--interface",
                &if_b,
                "--bundle",
                bundle.to_str().expect("utf8"),
            ],
            "has no IPv4 address",
        ),
        (
            vec![
                "--interface",
                "nosuch0",
                "--bundle",
                bundle.to_str().expect("utf8"),
            ],
            "interface nosuch0 does not exist",
        ),
        (
            vec![
                "--interface",
                &if_a,
                "--bundle",
                tmp.path().to_str().expect("utf8"),
            ],
            "missing: vmlinuz, initrd.img, undionly.kpxe, snponly.efi or ipxe.efi",
        ),
        (
            vec![
                "--interface",
                &if_a,
                "--bundle",
                bundle.to_str().expect("utf8"),
                "--mode",
                "full",
                "--range",
                "10.80.0.1-10.80.0.9",
                "--probe-wait",
                "0.1",
                "--lease-file",
                "/nonexistent-dir-for-test/x.json",
            ],
            "",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let ns = if i == 0 { &b } else { &a };
        let mut p = start_server(ns, args, &tmp.path().join(format!("c{i}.log")));
        let code = p.wait_exit(Duration::from_secs(10));
        let t = p.log_text();
        assert_eq!(code, Some(1), "{args:?}: {t}");
        assert!(t.contains(want) && t.contains("hint:"), "{args:?}: {t}");
    }
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
