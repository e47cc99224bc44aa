"""Loop errors are logged once per class per interval, with a count of the rest."""

from __future__ import annotations

import asyncio
import time

from fastgw.obs.errorlog import ErrorLog


def test_one_line_per_class_per_interval_and_no_traceback():
    lines: list[str] = []
    log = ErrorLog(lines.append, interval=0.3)
    loop = asyncio.new_event_loop()
    try:
        for _ in range(500):
            log.handle(loop, {"message": "protocol.data_received() call failed.", "exception": ValueError("bad")})
        log.handle(loop, {"message": "protocol.data_received() call failed.", "exception": KeyError("k")})
        assert len(lines) == 2 and all("Traceback" not in line and "\n" not in line for line in lines)
        time.sleep(0.35)
        log.handle(loop, {"message": "protocol.data_received() call failed.", "exception": ValueError("bad")})
        assert len(lines) == 3 and "[+499 more" in lines[2]
    finally:
        loop.close()


def test_many_classes_share_a_bucket():
    lines: list[str] = []
    log = ErrorLog(lines.append, interval=60)
    for i in range(200):
        log.handle(None, {"message": f"error {i}"})
    assert len(lines) == 65  # 64 classes, then "other errors" once
