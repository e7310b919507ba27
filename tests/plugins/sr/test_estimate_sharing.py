"""The SR estimate when array tasks share a cluster that cannot run them all at full speed at once."""

from __future__ import annotations

from reelforge.sr.job import model_estimate

# 4 segments of 100 frames at 640x360 (0.2304 Mpx), 2.304 Mpx/s: 10 s each for one task alone
PLAN = {"geometry": {"decode_width": 640, "decode_height": 360},
        "segments": [{"start_frame": a, "end_frame": a + 100} for a in range(0, 400, 100)]}


def test_tasks_beyond_the_clusters_throughput_share_it_and_the_last_one_runs_alone():
    # 3 nodes on the cores of one: 3 tasks at a third of the speed (30 s each), then the 4th alone (10 s)
    shared = model_estimate(PLAN, 2.304, 3, full_speed_tasks=1)
    assert (shared["model_seconds"], shared["task_seconds"], shared["wall_seconds"]) == (40.0, 100.0, 40.0)
    assert shared["parallel"] == 3 and shared["full_speed_tasks"] == 1.0
    # every task at full speed (the default): 2 rounds of 10 s
    alone = model_estimate(PLAN, 2.304, 3)
    assert (alone["task_seconds"], alone["wall_seconds"], alone["full_speed_tasks"]) == (40.0, 20.0, 3.0)
    assert model_estimate(PLAN, 2.304, 3, full_speed_tasks=0) == alone  # unset: full speed
    assert model_estimate(PLAN, 2.304, 3, full_speed_tasks=5) == alone  # never more than the tasks at once


def test_start_ups_share_the_cluster_too():
    # 2 tasks at once with the throughput of 1.5: (2 + 10) s of work each at 0.75 speed = 16 s, twice
    est = model_estimate(PLAN, 2.304, 2, startup_seconds=2, full_speed_tasks=1.5)
    assert (est["task_seconds"], est["wall_seconds"]) == (64.0, 32.0)
