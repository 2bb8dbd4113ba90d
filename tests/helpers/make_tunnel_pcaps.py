"""Make tests/pcaps/tunnels/: real curl, dig and socat traffic through every encapsulation, captured on the underlay.

    sudo .venv/bin/python -m tests.helpers.make_tunnel_pcaps [OUT_DIR]

For each tunnel kind (tests/helpers/tunnellab.py: VXLAN with `ip link`, the
others in user space) namespace a fetches http://<b>/index.html over inner
IPv4, asks dnsmasq in b for inside.example.test over inner IPv6, and sends a
line to port 9999 (no protocol) over inner IPv4; tcpdump on a's veth keeps
the tunnel's packets.  manifest.json records, per pcap, what is inside: the
inner and outer addresses, the tunnel type per inner family and its id.
The committed files were made with this script; the tests read them, they
do not run it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers.live import start_tcpdump
from tests.helpers.netns import veth_pair
from tests.helpers.tunnel_forwarder import GRE_KEY, SESSION, VNI
from tests.helpers.tunnellab import VXLAN_VNI, tunnel

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "pcaps" / "tunnels"
# pcap name: (tunnel kind, outer IPv6, type with IPv4 inside, with IPv6 inside, id)
KINDS: dict[str, tuple[str, bool, str, str, int]] = {
    "vxlan": ("vxlan", False, "vxlan", "vxlan", VXLAN_VNI),
    "geneve": ("geneve", False, "geneve", "geneve", VNI),
    "gre": ("gre", False, "gre", "gre", 0),
    "gre-key-seq": ("gre-keyseq", False, "gre", "gre", GRE_KEY),
    "erspan1": ("erspan1", False, "erspan1", "erspan1", 0),
    "erspan2": ("erspan2", False, "erspan2", "erspan2", SESSION),
    "ipip": ("ipip", False, "ip-in-ip", "ipv6-in-ip", 0),
    "ipip-over-ipv6": ("ipip", True, "ip-in-ip", "ipv6-in-ip", 0),
    "pppoe": ("pppoe", False, "pppoe", "pppoe", SESSION),
}


def make(name: str, out: Path, www: Path) -> dict[str, Any]:
    kind, outer6, type4, type6, tunnel_id = KINDS[name]
    with veth_pair() as pair, tunnel(pair, kind, outer6=outer6) as t:
        pair.b.popen(["python3", "-m", "http.server", "-b", "::", "-d", str(www), "80"])
        pair.b.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=53",
                      "--bind-interfaces", "--pid-file=", "--user=root", "--group=root",
                      f"--listen-address={t.b_ip6}", "--host-record=inside.example.test,10.99.0.7,fd00:99::7"])
        pair.b.popen(["socat", "TCP-LISTEN:9999,reuseaddr,fork", "EXEC:cat"])
        for port, udp in ((80, False), (53, True), (9999, False)):
            pair.b.wait_port(port, udp=udp)
        under_a, under_b = (pair.a_ip6, pair.b_ip6) if outer6 else (pair.a_ip, pair.b_ip)
        bpf = "ether proto 0x8864" if kind == "pppoe" else f"host {under_a} and host {under_b}"
        pcap = out / f"{name}.pcap"
        dumper = start_tcpdump(pair.a, pair.a_if, pcap, bpf)
        pair.a.run(["curl", "-s", "--max-time", "10", f"http://{t.b_ip}/index.html"])
        pair.a.run(["dig", "+short", "+tries=1", f"@{t.b_ip6}", "inside.example.test", "A"])
        pair.a.run(["socat", "-", f"TCP:{t.b_ip}:9999"], input="not for any protocol\n")
        time.sleep(0.3)
        dumper.stop()
        return {"client": t.a_ip, "server": t.b_ip, "client6": t.a_ip6, "server6": t.b_ip6,
                "outer": [under_a, under_b] if kind != "pppoe" else None, "type4": type4, "type6": type6,
                "id": tunnel_id}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    out.mkdir(parents=True, exist_ok=True)
    www = out / ".www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("<html>inside</html>\n")
    try:
        manifest = {f"{name}.pcap": make(name, out, www) for name in KINDS}
    finally:
        for path in www.iterdir():
            path.unlink()
        www.rmdir()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
