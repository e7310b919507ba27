"""Frame placement runs: how source times are fitted (the pipeline test checks the muxed result)."""

from __future__ import annotations

import random
from fractions import Fraction

from reelforge_sr.timeline import MAX_FILTER_CHARS, frame_runs, seconds_of, setts_filter, track_timescale


def placed(times: list[Fraction], fps: Fraction) -> list[float]:
    runs = frame_runs(times, fps)
    timescale, _ = track_timescale(fps)
    return [seconds_of(runs, k, timescale) for k in range(len(times))]


def worst_error(times: list[Fraction], fps: Fraction) -> float:
    return max(abs(p - float(t - times[0])) for p, t in zip(placed(times, fps), times, strict=True))


def test_a_constant_rate_is_one_run_on_the_exact_grid():
    fps = Fraction(24000, 1001)
    times = [k / fps for k in range(500)]
    (run,) = frame_runs(times, fps)
    assert run.step == track_timescale(fps)[1] and worst_error(times, fps) == 0


def test_millisecond_rounded_timestamps_of_a_constant_rate_stay_one_run():
    fps = Fraction(30000, 1001)
    times = [Fraction(round(k / fps * 1000), 1000) for k in range(3000)]  # as Matroska stores them
    assert len(frame_runs(times, fps)) == 1 and worst_error(times, fps) < 0.001


def test_a_rate_switch_gives_one_run_per_rate():
    times = [Fraction(k, 24) for k in range(48)] + [2 + Fraction(k, 30) for k in range(1, 46)]
    times += [times[-1] + Fraction(k, 24) for k in range(1, 25)]
    fps = Fraction(1755, 67)  # what ffprobe gives as the average rate of this clip
    assert [r.first for r in frame_runs(times, fps)] == [0, 48, 93]  # frame 92 ends the 30 fps part
    assert worst_error(times, fps) < 0.0002


def test_irregular_timestamps_stay_within_a_twentieth_of_a_frame():
    rng = random.Random(7)
    fps = Fraction(30)
    t, times = Fraction(0), []
    for _ in range(3_000):  # a phone clip: stretches of 30 fps with dropped frames here and there
        times.append(t)
        t += Fraction(1, 30) * (2 if rng.random() < 0.02 else 1)
    assert worst_error(times, fps) <= 0.05 / 30


def test_timestamps_that_jitter_every_frame_keep_the_filter_within_one_argument_and_one_frame():
    rng = random.Random(7)
    fps = Fraction(25)
    t, times = Fraction(0), []
    for _ in range(20_000):  # every frame between 0.5 and 1.5 nominal durations: the worst case
        times.append(t)
        t += Fraction(rng.randint(20, 60), 1000)
    runs = frame_runs(times, fps)
    assert len(setts_filter(runs, track_timescale(fps)[1])) <= MAX_FILTER_CHARS
    assert worst_error(times, fps) <= 1 / 25
