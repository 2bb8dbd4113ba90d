"""Issue 15, defect 1 and acceptance b on live capture: a full disk never stops capture, and after it every
event not counted as dropped is delivered once.  Also the first SIGINT with Elasticsearch down.

The 60 s episode of the acceptance is `bench/disk_full.py`; this one holds the disk full for 10 s, with a
small write-ahead buffer so that the episode also overflows into counted drops.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.faults import delivery_live_disk
from tests.helpers.live import live_agent, live_available
from tests.helpers.netns import veth_pair
from tests.helpers.tmpfs import tmpfs_available

pytestmark = [pytest.mark.live, pytest.mark.skipif(live_available() is not None or tmpfs_available() is not None,
                                                  reason=live_available() or tmpfs_available() or "")]


def test_capture_goes_on_through_a_full_disk_and_delivers_everything_not_counted_as_dropped() -> None:
    episode = delivery_live_disk.run(10.0, before_s=2.0, after_s=4.0, rate=150.0,
                                     settings={"queue.disk": {"write_ahead": 200, "max_size": "64MB"}})
    summary = episode.summary()
    log = episode.log
    assert episode.exit_code == 0, log[-3000:]
    assert "Traceback" not in log
    assert episode.ok == episode.requests > 2000, summary
    # Capture never stopped: every request became an event the agent received.
    assert episode.counters["live.events_received"] == episode.requests, summary
    # Each is either in the file once, or counted as dropped; nothing else.
    assert episode.duplicates == 0 and episode.torn_lines == 0, summary
    assert len(episode.delivered) + episode.dropped == episode.requests, summary
    assert episode.dropped > 0, summary  # the episode did overflow the memory held while the disk was full
    assert episode.missing_after(episode.freed_at + 3.0) == [], summary
    # The agent said what was full, and that writing resumed.
    assert "No space left on device" in log, log[-3000:]
    assert "the disk under the spool cannot be written" in log
    assert re.search(r"output\.file: writing to \S+ again after", log), log[-3000:]
    assert re.search(r"spool: (\S+ can be written again|every event held in memory .* was delivered)", log)


BLACK_HOLE = r"""
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
held = []
while True:
    held.append(srv.accept()[0])  # accepted, never answered: an Elasticsearch that hangs
"""


def test_the_first_sigint_with_elasticsearch_hanging_stops_live_capture_within_two_seconds() -> None:
    with veth_pair("pes") as pair:
        pair.a.popen(["python3", "-c", BLACK_HOLE, "9299"])
        pair.a.wait_port(9299)
        settings = {"output.file": {"enabled": False}, "output.elasticsearch": {"hosts": ["127.0.0.1:9299"]},
                    "queue.mem.flush.timeout": "50ms"}
        with live_agent(pair.a, [pair.a_if], [{"type": "icmp", "enabled": True}], settings) as agent:
            pair.a.run(["ping", "-c", "3", "-i", "0.2", pair.b_ip])
            time.sleep(1.0)  # the events are sent: the request hangs
            code = agent.stop(timeout=15)
            took = agent.stop_seconds
            log = agent.log()
    assert took is not None and took < 2.0, f"stopping took {took}s"
    assert code == 0, log[-3000:]
    assert "Traceback" not in log
