"""`packetbeat.tunnels`: defaults, validation, and what replay and the kernel get from it."""

from __future__ import annotations

import pytest

from agent.config.load import load
from agent.config.typed import ConfigError
from agent.runtime import wiring


def test_defaults_look_inside_every_tunnel_on_the_usual_ports() -> None:
    tunnels = load(None).tunnels
    assert (tunnels.enabled, tunnels.vxlan_ports, tunnels.geneve_ports) == (True, (4789, 8472), (6081,))


def test_ports_and_switch_are_settable() -> None:
    config = load(None, ["packetbeat.tunnels.enabled=false", "packetbeat.tunnels.vxlan_ports=[4789, 4790]",
                         "packetbeat.tunnels.geneve_ports=6081"])
    assert wiring.tunnel_settings(config) == (False, (4789, 4790), (6081,))


@pytest.mark.parametrize(("override", "reason"), [
    ("packetbeat.tunnels.vxlan_ports=[0]", "port 0 is outside 1-65535"),
    ("packetbeat.tunnels.vxlan_ports=[70000]", "port 70000 is outside 1-65535"),
    ("packetbeat.tunnels.vxlan_ports=[4789, 4789]", "a port is listed twice"),
    ("packetbeat.tunnels.geneve_ports=[1,2,3,4,5,6,7,8,9]", "at most 8 ports"),
    ("packetbeat.tunnels.geneve_ports=[8472]", "port 8472 is both a VXLAN and a GENEVE port"),
    ("packetbeat.tunnels.vxlan=[4789]", "unknown setting (did you mean 'vxlan_ports'?)"),
])
def test_bad_settings_name_the_key_and_the_reason(override: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, [override])
    assert reason in str(err.value) and "packetbeat.tunnels" in str(err.value)
