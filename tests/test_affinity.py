"""Where handlers run: each process that runs them stays on one CPU (--cpu-affinity,
workers/affinity.py), and -m's workers a few nice steps below the server (--worker-nice,
workers/priority.py)."""

from __future__ import annotations

import os

import pytest

from kongish_pdk.testing import KongClient
from kongish_pdk.workers import affinity

from conftest import TEST_PLUGINS
from support.events import set_headers

# With one usable CPU, pinned and unpinned give the same mask: those checks could not fail.
NEEDS_TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                    reason="needs two usable CPUs to tell pinned from unpinned")


def worker_pids(kong: KongClient, workers: int) -> set[int]:
    iid = kong.start_instance("counter")
    return {int(set_headers(kong, iid)["x-pid"]) for _ in range(2 * workers)}


def cpus_of(pid: int) -> set[int]:
    """The CPUs every thread of ``pid`` may run on (one set if they agree)."""
    masks = {frozenset(os.sched_getaffinity(int(task))) for task in os.listdir(f"/proc/{pid}/task")}
    assert len(masks) == 1, f"threads of {pid} disagree: {masks}"
    return set(next(iter(masks)))


def test_each_worker_and_its_replacement_is_pinned_to_one_usable_cpu_in_turn(start) -> None:
    usable = sorted(os.sched_getaffinity(0))
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    with KongClient(server.socket_path) as kong:
        pinned = {pid: cpus_of(pid) for pid in worker_pids(kong, 2)}
        assert sorted(cpu for cpus in pinned.values() for cpu in cpus) == \
            sorted([usable[0], usable[1 % len(usable)]])
        server.wait_for(r"started 2 worker processes \(\d+ on CPU \d+, \d+ on CPU \d+\)")

        crasher = kong.start_instance("crasher")
        kong.step(kong.handle_event(crasher, "access")["EventId"], "yes")
        victim = int(server.wait_for(r"worker process (\d+) exited").group(1))
        survivors = worker_pids(kong, 2)
        assert victim not in survivors and len(survivors) == 2
        (replacement,) = survivors - set(pinned)
        assert cpus_of(replacement) == pinned[victim]  # the same CPU as the one it replaced


@NEEDS_TWO_CPUS
def test_affinity_off_leaves_workers_on_every_usable_cpu(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2", "--cpu-affinity", "off")
    with KongClient(server.socket_path) as kong:
        for pid in worker_pids(kong, 2):
            assert cpus_of(pid) == os.sched_getaffinity(server.pid)


def expected_nice(server_pid: int, steps: int) -> int:
    return min(os.getpriority(os.PRIO_PROCESS, server_pid) + steps, 19)  # 19 is the floor


def nice_of(pid: int) -> int:
    """The nice value of every thread of ``pid`` (Linux keeps one per thread)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    values = {os.getpriority(os.PRIO_PROCESS, int(task)) for task in tasks}
    assert len(values) == 1, f"threads of {pid} disagree: {values}"
    return values.pop()


@pytest.mark.parametrize("steps", [None, 0, 7])
def test_workers_and_their_replacements_run_nice_steps_below_the_server(start, steps) -> None:
    flags = () if steps is None else ("--worker-nice", str(steps))
    below = 5 if steps is None else steps  # 5: the documented default
    server = start(TEST_PLUGINS, "-m", "--workers", "2", *flags)
    wanted = expected_nice(server.pid, below)
    assert os.getpriority(os.PRIO_PROCESS, server.pid) < wanted or steps == 0
    with KongClient(server.socket_path) as kong:
        workers = worker_pids(kong, 2)
        assert {nice_of(pid) for pid in workers} == {wanted}  # handler threads ran meanwhile
        crasher = kong.start_instance("crasher")
        kong.step(kong.handle_event(crasher, "access")["EventId"], "yes")
        server.wait_for(r"worker process \d+ exited")
        (replacement,) = worker_pids(kong, 2) - workers
        assert nice_of(replacement) == wanted
    if steps != 0:
        server.wait_for(rf"started 2 worker processes .*, {below} nice steps below the server")


def test_default_worker_count_is_the_cpus_the_server_may_use(start) -> None:
    # As in a container limited by a cpuset (or taskset): one usable CPU, one worker.
    only = min(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {only})  # inherited by the server started from this thread
    try:
        server = start(TEST_PLUGINS, "-m")
    finally:
        os.sched_setaffinity(0, mine)
    server.wait_for(rf"started 1 worker processes \(\d+ on CPU {only}\)")
    with KongClient(server.socket_path) as kong:
        assert len(worker_pids(kong, 2)) == 1


def test_worker_cpus_take_the_usable_cpus_in_turn(monkeypatch) -> None:
    monkeypatch.setattr(affinity, "usable_cpus", lambda: [2, 5, 7])
    assert affinity.worker_cpus(5, "auto") == [2, 5, 7, 2, 5]
    assert affinity.worker_cpus(2, "off") == [None, None]
    assert affinity.server_cpu("auto") == 7 and affinity.server_cpu("off") is None


@NEEDS_TWO_CPUS
def test_threads_mode_server_is_pinned_to_the_last_usable_cpu_and_gevent_is_not(start) -> None:
    everywhere = os.sched_getaffinity(0)
    threads = start(TEST_PLUGINS)  # threads mode
    with KongClient(threads.socket_path) as kong:  # handler threads exist now
        iid = kong.start_instance("hello")
        for _ in range(4):
            kong.run_event(iid, "access", lambda m, a: "h")
        assert len(os.listdir(f"/proc/{threads.pid}/task")) >= 2  # a handler thread too
        assert cpus_of(threads.pid) == {max(everywhere)}
    threads.wait_for(rf"process {threads.pid} pinned to CPU {max(everywhere)}")
    unpinned = start(TEST_PLUGINS, "--cpu-affinity", "off")
    assert cpus_of(unpinned.pid) == everywhere
    gevent = start(TEST_PLUGINS, mode="gevent")  # one thread: nothing to keep together
    assert cpus_of(gevent.pid) == everywhere


def test_threads_worker_resolves_its_options_and_pin_process_none_is_a_no_op(monkeypatch) -> None:
    from kongish_pdk.workers.threads import DEFAULT_THREADS, ThreadWorker

    monkeypatch.setattr(affinity, "usable_cpus", lambda: [2, 5, 7])
    assert ThreadWorker()._cpu == 7 and ThreadWorker(cpu_affinity="off")._cpu is None
    assert ThreadWorker().pool.max_threads == DEFAULT_THREADS
    assert ThreadWorker(threads=3).pool.max_threads == 3

    def refuse(*_: object) -> None:
        raise AssertionError("pin_process(None) must not touch the affinity")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    affinity.pin_process(None)
