"""create_pipeline: which spool, which mode, which settings, from the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.load import from_tree
from agent.outputs.discard import DiscardOutput
from agent.publisher.factory import OVERFLOW_SPOOL_MAX, create_pipeline
from agent.publisher.types import OutputError


def config(tmp: Path, **tree: object):  # type: ignore[no-untyped-def]
    return from_tree({"path": {"data": str(tmp)}, **tree})


def test_replay_without_disk_queue_has_no_spool(tmp_path: Path) -> None:
    pipe = create_pipeline(config(tmp_path), DiscardOutput(), live=False)
    try:
        assert pipe.spool is None and not pipe.live
        assert pipe.max_events == 3200 and pipe.flush_min_events == 1600 and pipe.flush_timeout == 10.0
    finally:
        pipe.close()


def test_live_gets_an_overflow_spool_under_path_data(tmp_path: Path) -> None:
    pipe = create_pipeline(config(tmp_path), DiscardOutput(), live=True)
    try:
        assert pipe.live and not pipe.durable
        assert pipe.spool is not None and pipe.spool.directory == tmp_path / "spool"
        assert pipe.spool.max_size == OVERFLOW_SPOOL_MAX
    finally:
        pipe.close()


def test_disk_queue_is_durable_in_both_modes(tmp_path: Path) -> None:
    cfg = config(tmp_path, queue={"disk": {"path": str(tmp_path / "dq"), "max_size": "64MiB",
                                           "segment_size": "1MiB", "write_ahead": 10}})
    for live in (False, True):
        pipe = create_pipeline(cfg, DiscardOutput(), live=live)
        try:
            assert pipe.durable and pipe.spool is not None
            assert pipe.spool.max_size == 64 * 1024**2 and pipe.spool.segment_size == 1024**2
            assert pipe.spool.write_ahead == 10
        finally:
            pipe.close()


def test_output_backoff_and_preset_are_used(tmp_path: Path) -> None:
    cfg = config(tmp_path, output={"elasticsearch": {"hosts": ["127.0.0.1:1"], "preset": "latency",
                                                     "backoff": {"init": "3s", "max": "7s"}}})
    pipe = create_pipeline(cfg, DiscardOutput(), live=False)
    try:
        assert (pipe.backoff_init, pipe.backoff_max) == (3.0, 7.0)
        assert (pipe.max_events, pipe.flush_min_events, pipe.flush_timeout) == (4100, 2050, 1.0)
    finally:
        pipe.close()


def test_unusable_spool_path_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"queue\.disk\.path"):
        create_pipeline(config(tmp_path, queue={"disk": {"path": str(blocker / "dq")}}), DiscardOutput(), live=True)
