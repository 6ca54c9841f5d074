//! Boots are hermetic (issue 21): a guest booted by `imgbuild test` has a
//! working NIC (QEMU's user network gives it a DHCP lease) and still reaches nothing off the guest: neither QEMU's gateway
//! (the host, 10.0.2.2) nor any address of the machine it runs on.
//!
//! The guest runs a probe at boot that waits for its DHCP lease, then
//! tries a TCP connection to a port the test listens on, through the
//! gateway and at each of the machine's own addresses, and prints what it
//! found on the console; `imgbuild test` expects the line that says
//! everything was blocked, and the listener must have seen no connection.
//! No outside address is ever tried: the probe's targets are the machine
//! itself, so the test would fail (the listener would hear the guest) if
//! the restriction were gone, without a packet leaving the machine.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;
use crate::support::{beside, debian_tar, require_tool, tempdir, write_recipe};

/// The machine's own IPv4 addresses, loopback excluded (`hostname -I`).
fn own_addresses() -> Vec<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| !a.is_loopback())
        })
        .map(String::from)
        .collect()
}

/// The probe, run once at boot: `lease=yes` once a link other than the
/// loopback has a route (DHCP answered, so the NIC works). A restricted
/// user network offers no router (the lease has no default route), so the
/// probe adds one through QEMU's gateway itself: its attempts then go into
/// QEMU rather than stopping at the guest's routing table. Then
/// `reached`/`blocked` for the gateway and for the machine's addresses, on
/// port `port`.
fn probe(port: u16, hosts: &[String]) -> String {
    format!(
        r#"#!/bin/bash
lease=no
for i in $(seq 1 120); do
    while read -r iface _; do [ "$iface" != Iface ] && [ "$iface" != lo ] && lease=yes; done < /proc/net/route
    [ $lease = yes ] && break
    sleep 1
done
ip route replace default via 10.0.2.2 2>/dev/null
try() {{ timeout 5 bash -c "exec 3<>/dev/tcp/$1/{port} && echo $2 >&3" 2>/dev/null && echo reached || echo blocked; }}
gateway=$(try 10.0.2.2 gateway)
host=blocked
for a in {hosts}; do [ "$(try "$a" "host-$a")" = reached ] && host=reached; done
echo "HERMETIC-PROBE lease=$lease gateway=$gateway host=$host" > /dev/ttyS0
"#,
        hosts = hosts.join(" ")
    )
}

const UNIT: &str = "[Unit]\nDescription=imgbuild hermetic probe\nAfter=network.target\n\n\
[Service]\nType=oneshot\nExecStart=/usr/local/sbin/hermetic-probe\n\n\
[Install]\nWantedBy=multi-user.target\n";

fn recipe(dir: &Path, tar: &Path, port: u16, hosts: &[String]) -> std::path::PathBuf {
    let name = beside(dir, tar);
    write_recipe(
        dir,
        "recipe.toml",
        &format!(
            "[image]\nname = \"hermetic\"\nsize = \"3GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n\
             [boot]\ncmdline = \"console=ttyS0,115200\"\n\n[config]\nhostname = \"hermetic\"\n\n\
             [[config.files]]\npath = \"/usr/local/sbin/hermetic-probe\"\nmode = \"0755\"\ncontent = '''\n{probe}'''\n\n\
             [[config.files]]\npath = \"/etc/systemd/system/hermetic-probe.service\"\ncontent = '''\n{UNIT}'''\n\n\
             [config.services]\nenable = [\"hermetic-probe.service\"]\n\n\
             [targets.kvm]\nfirmware = \"bios\"\n\n\
             [test]\nexpect = [\"HERMETIC-PROBE lease=yes gateway=blocked host=blocked\"]\n\
             fail = [\"HERMETIC-PROBE .*reached\", \"HERMETIC-PROBE lease=no\"]\ntimeout = 300\n",
            probe = probe(port, hosts)
        ),
    )
}

#[test]
fn a_guest_under_imgbuild_test_has_a_network_and_reaches_nothing_off_itself() {
    let Some(tar) = debian_tar() else { return };
    if !require_tool(crate::support::qemu::QEMU) {
        return;
    }
    let listener = TcpListener::bind("0.0.0.0:0").expect("listen");
    let port = listener.local_addr().expect("port").port();
    listener.set_nonblocking(true).expect("non-blocking");
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let listening = {
        let (heard, stop) = (heard.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, from)) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut said = String::new();
                        let _ = s.read_to_string(&mut said);
                        heard
                            .lock()
                            .unwrap()
                            .push(format!("{from}: {}", said.trim()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })
    };
    let hosts = own_addresses();
    let d = tempdir();
    let recipe = recipe(d.path(), &tar, port, &hosts);
    let out = d.path().join("out");
    let ran = support::test_tcg(&recipe, &out);
    stop.store(true, Ordering::Relaxed);
    listening.join().expect("listener");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        ran.status.success(),
        "the probe did not report a hermetic boot (tried gateway and {hosts:?}, port {port}):\n{stdout}\n{stderr}"
    );
    let heard = heard.lock().unwrap();
    assert!(heard.is_empty(), "the guest reached the machine: {heard:?}");
}
