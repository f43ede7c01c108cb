"""Cluster-wide per-host permits: a real HTTP permit server and clients in several processes."""

import multiprocessing as mp
import threading
import time

import pytest

from pipeline.permits import PermitServer, RemoteSlots


def _worker(url, host, n, hold_s, active, peak, lock):
    slots = RemoteSlots(url)

    def one():
        for _ in range(n):
            token = slots.acquire(host)
            with lock:
                active.value += 1
                peak.value = max(peak.value, active.value)
            time.sleep(hold_s)
            with lock:
                active.value -= 1
            slots.release(host, token)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_cap_holds_across_processes_and_hosts_are_separate():
    ctx = mp.get_context("spawn")
    active, peak, lock = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Lock()
    other_active, other_peak = ctx.Value("i", 0), ctx.Value("i", 0)
    with PermitServer(cap=2) as server:
        procs = [ctx.Process(target=_worker, args=(server.url, "upload.wikimedia.org", 5, 0.02, active, peak, lock))
                 for _ in range(3)]
        procs.append(ctx.Process(target=_worker, args=(server.url, "other.host", 5, 0.02, other_active, other_peak,
                                                       lock)))
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
        assert peak.value == 2  # 12 threads wanted it, never more than 2 at once
        assert other_peak.value == 2  # another host has its own cap
        assert server.granted == 3 * 4 * 5 + 4 * 5 and server.expired == 0


def test_a_lost_permit_expires_and_frees_its_slot():
    with PermitServer(cap=1, lease_s=0.3) as server:
        slots = RemoteSlots(server.url)
        slots.acquire("h")  # taken and never given back, as by a killed task
        started = time.monotonic()
        token = slots.acquire("h")
        assert 0.2 < time.monotonic() - started < 5
        assert server.expired == 1
        slots.release("h", token)
        slots.release("h", "no-such-token")  # unknown tokens are ignored


def test_unreachable_permit_server_is_a_clear_error():
    with PermitServer(cap=1) as server:
        url = server.url
    with pytest.raises(RuntimeError, match="permit server .* unreachable"):
        RemoteSlots(url, timeout_s=1, attempts=2).acquire("h")
