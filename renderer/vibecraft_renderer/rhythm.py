"""Beat tracking at a given tempo and onset picking on an onset-strength envelope, in plain numpy.

These are ports of librosa 0.11's `beat.beat_track` with `bpm` given (Ellis' dynamic program) and
`onset.onset_detect` (ISC licence, (c) librosa development team), producing the same beats. Why
not call librosa: importing `librosa.beat` JIT-compiles a numba kernel declared cache=False, which
costs 3-6 s of CPU in *every* renderer process even with a warm NUMBA_CACHE_DIR. The tempo itself
is chosen by tracker.py.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

TIGHTNESS: Final = 100.0


def _localmax(x: F64) -> npt.NDArray[np.bool_]:
    """x[i] > x[i-1] and x[i] >= x[i+1] (librosa.util.localmax, edges padded by themselves)."""
    padded = np.pad(x, 1, mode="edge")
    return (x > padded[:-2]) & (x >= padded[2:])


def beat_track(onset_env: F32, bpm: float, frame_rate: float, tightness: float = TIGHTNESS) -> I64:
    """Beat frame indices by Ellis' dynamic program (librosa.beat.beat_track with bpm given)."""
    env = onset_env.astype(np.float64)
    n = env.size
    if n == 0 or not env.any():
        return np.zeros(0, dtype=np.int64)
    fpb = float(np.round(frame_rate * 60.0 / bpm))
    norm = env / (env.std(ddof=1) + np.finfo(np.float64).tiny)
    k = int(fpb)
    window = np.exp(-0.5 * (np.arange(-k, k + 1) * 32.0 / fpb) ** 2)
    localscore = np.convolve(norm, window, mode="same")

    near, far = int(np.round(fpb / 2)), int(2 * fpb)
    # Candidate predecessors of frame i are i-near .. i-far, all before the block [s, s+near) that
    # contains i: so `near` frames are solved at once (librosa loops frame by frame in numba).
    # Gaps ascend, so argmax's first hit is the latest predecessor, as librosa's descending search.
    gaps = np.arange(near, far + 1)
    penalty = -tightness * (np.log(gaps) - np.log(fpb)) ** 2
    cumscore = np.zeros(n, dtype=np.float64)
    backlink = np.full(n, -1, dtype=np.int64)
    above = np.flatnonzero(localscore >= 0.01 * localscore.max())
    first_beat = int(above[0]) if above.size else n  # before it, no back-links (librosa's first_beat)
    step = max(near, 1)
    for s in range(0, n, step):
        i = np.arange(s, min(s + step, n))
        locs = i[:, None] - gaps[None, :]
        valid = locs >= 0
        vals = np.where(valid, cumscore[np.maximum(locs, 0)] + penalty, -np.inf)
        j = np.argmax(vals, axis=1)
        rows = np.arange(i.size)
        has = valid[:, 0]
        cumscore[i] = localscore[i] + np.where(has, vals[rows, j], 0.0)
        backlink[i] = np.where(has & (i >= first_beat), locs[rows, j], -1)

    peaks = _localmax(cumscore)
    threshold = 0.5 * float(np.median(cumscore[peaks])) if peaks.any() else 0.0
    candidates = np.flatnonzero(peaks & (cumscore >= threshold))
    tail = int(candidates[-1]) if candidates.size else n - 1
    beats = np.zeros(n, dtype=bool)
    while tail >= 0:
        beats[tail] = True
        tail = int(backlink[tail])
    return np.flatnonzero(_trim(localscore, beats)).astype(np.int64)


def _trim(localscore: F64, beats: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Drop leading/trailing beats with weak onsets (half the RMS of the smoothed beat strengths)."""
    out = beats.copy()
    w = np.hanning(5)
    smooth = np.convolve(localscore[beats], w)[len(w) // 2 : len(localscore) + len(w) // 2]
    threshold = 0.5 * float(np.sqrt(np.mean(smooth**2))) if smooth.size else 0.0
    i = 0
    while i < localscore.size and localscore[i] <= threshold:
        out[i] = False
        i += 1
    i = localscore.size - 1
    while i >= 0 and localscore[i] <= threshold:
        out[i] = False
        i -= 1
    return out


def onset_frames(onset_env: F32, frame_rate: float) -> I64:
    """Onset peaks (librosa.onset.onset_detect defaults: 30 ms max, 100 ms mean, delta 0.07)."""
    env = onset_env.astype(np.float64)
    if env.size == 0 or not env.any():
        return np.zeros(0, dtype=np.int64)
    env = env - env.min()
    env /= env.max() + np.finfo(np.float64).tiny
    pre_max, post_max = int(0.03 * frame_rate), int(0.0 * frame_rate) + 1
    pre_avg, post_avg = int(0.10 * frame_rate), int(0.10 * frame_rate) + 1
    wait = int(0.03 * frame_rate)
    n = env.size
    # Sliding max over [i - pre_max, i + post_max) and mean over [i - pre_avg, i + post_avg).
    pad_max = np.pad(env, (pre_max, post_max), constant_values=-np.inf)
    mov_max = np.lib.stride_tricks.sliding_window_view(pad_max, pre_max + post_max)[:n].max(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(env)])
    idx = np.arange(n)
    a, b = np.maximum(idx - pre_avg, 0), np.minimum(idx + post_avg, n)
    mov_avg = (csum[b] - csum[a]) / (b - a)
    candidates = np.flatnonzero((env == mov_max) & (env >= mov_avg + 0.07))
    picked: list[int] = []
    for c in candidates:
        if not picked or c > picked[-1] + wait:
            picked.append(int(c))
    return np.asarray(picked, dtype=np.int64)


# ------------------------------------------------------------------ VibeCraft's additions

BEATS_PER_BAR: Final = 4


def _unit(x: npt.NDArray[np.floating]) -> F32:
    """Robustly scale to ~0..1 (5th..95th percentile)."""
    lo, hi = np.percentile(x, [5, 95]) if x.size else (0.0, 1.0)
    return np.clip((x - lo) / max(float(hi - lo), 1e-9), 0.0, 1.5).astype(np.float32)
