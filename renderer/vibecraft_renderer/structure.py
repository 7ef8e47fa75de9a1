"""Structural sections: where the song changes, which parts repeat, and chorus/verse-like labels.

Boundaries come from agglomerative clustering of beat-synchronous chroma+MFCC with temporal
connectivity (what librosa.segment.agglomerative does, called through scikit-learn directly);
sections that sound alike are grouped (a chorus and its repeats get the same visuals), and groups
are labelled by energy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SECONDS_PER_SECTION: Final = 20.0
MAX_SECTIONS: Final = 60
MIN_SECTION_S: Final = 4.0
MAX_GROUPS: Final = 8

MOODS: Final = {
    "intro": "quiet, mysterious, dawn light, soft focus",
    "verse": "flowing, atmospheric, rich colour",
    "chorus": "euphoric, vivid, dramatic lighting, high energy",
    "bridge": "dreamy, surreal, contrasting tones",
    "breakdown": "minimal, calm, deep shadows",
    "outro": "fading, serene, dusk light",
}


@dataclass
class Section:
    """A structural section, with a chorus/verse-like label and mood words for image prompts."""

    start: float
    end: float
    label: str
    group: int
    energy: float
    mood: str

    def to_json(self) -> dict[str, Any]:
        """analysis.json representation."""
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "group": self.group,
            "energy": round(self.energy, 3),
            "mood": self.mood,
        }


def beat_sync(features: npt.NDArray[Any], beat_frames: npt.NDArray[np.int_]) -> F64:
    """Median of each feature between consecutive beats (librosa.util.sync with np.median)."""
    edges = np.unique(np.concatenate([[0], beat_frames, [features.shape[1]]]))
    cols = [np.median(features[:, a:b], axis=1) for a, b in itertools.pairwise(edges) if b > a]
    return np.stack(cols, axis=1).astype(np.float64)


def find_sections(
    beats: F64, features: dict[str, npt.NDArray[Any]], energy: F32, duration: float, frame_rate: float
) -> list[Section]:
    """Segment, group and label the song."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.image import grid_to_graph

    target = int(np.clip(round(duration / SECONDS_PER_SECTION), 2, MAX_SECTIONS))
    beat_frames = np.unique(np.clip(np.round(beats * frame_rate).astype(int), 1, energy.size - 1))
    k = min(target, max(1, beat_frames.size // 8))
    bounds: list[float] = [0.0]
    if k >= 2:
        synced = beat_sync(np.vstack([features["chroma"], features["mfcc"][1:]]), beat_frames)
        mu = synced.mean(axis=1, keepdims=True)
        sd = synced.std(axis=1, keepdims=True) + 1e-6
        data = ((synced - mu) / sd).T
        connectivity = grid_to_graph(n_x=data.shape[0], n_y=1, n_z=1)
        labels = AgglomerativeClustering(n_clusters=k, connectivity=connectivity).fit(data).labels_
        starts = 1 + np.flatnonzero(np.diff(labels))
        edges_f = np.unique(np.concatenate([[0], beat_frames, [features["chroma"].shape[1]]]))
        # Boundaries sit on beat frames; report the exact beat time so section starts stay on the beat.
        beat_at = {round(b * frame_rate): float(b) for b in beats}
        bounds += [beat_at.get(int(edges_f[i]), float(edges_f[i]) / frame_rate) for i in starts]
    bounds = _merge_short(sorted(set(bounds)), duration, MIN_SECTION_S)
    edges = [*bounds, duration]
    sec_energy, vectors = [], []
    for a, b in itertools.pairwise(edges):
        lo = min(int(a * frame_rate), energy.size - 1)
        hi = max(lo + 1, min(int(b * frame_rate), energy.size))
        sec_energy.append(float(energy[lo:hi].mean()))
        vectors.append(np.concatenate([features["chroma"][:, lo:hi].mean(axis=1),
                                       features["mfcc"][1:, lo:hi].mean(axis=1) / 50.0]))  # fmt: skip
    groups = _group_sections(np.array(vectors))
    edges, groups, energies = _merge_repeats(edges, groups, np.array(sec_energy))
    return _label(edges, groups, energies)


def _merge_repeats(
    edges: list[float], groups: npt.NDArray[np.int_], energy: F64
) -> tuple[list[float], npt.NDArray[np.int_], F64]:
    """Adjacent sections of the same group are one section (same material, same visuals)."""
    keep = [0] + [i for i in range(1, len(groups)) if groups[i] != groups[i - 1]]
    lengths = np.diff(edges)
    new_energy = []
    for n, start in enumerate(keep):
        stop = keep[n + 1] if n + 1 < len(keep) else len(groups)
        new_energy.append(float(np.average(energy[start:stop], weights=lengths[start:stop])))
    return [edges[i] for i in keep] + [edges[-1]], groups[keep], np.array(new_energy)


def _merge_short(bounds: list[float], duration: float, min_len: float) -> list[float]:
    out: list[float] = []
    for b in bounds:
        if not out or b - out[-1] >= min_len:
            out.append(b)
    while len(out) > 1 and duration - out[-1] < min_len:
        out.pop()
    return out or [0.0]


def _group_sections(vectors: F64) -> npt.NDArray[np.int_]:
    """Sections that sound alike share a group, numbered in order of first appearance."""
    n = len(vectors)
    if n <= 2:
        return np.arange(n)
    from sklearn.cluster import AgglomerativeClustering

    n_groups = int(np.clip(round(n * 0.5), 2, MAX_GROUPS))
    labels = AgglomerativeClustering(n_clusters=n_groups).fit(vectors).labels_
    order: dict[int, int] = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels])


def _label(edges: list[float], groups: npt.NDArray[np.int_], energy: F64) -> list[Section]:
    n = len(edges) - 1
    group_energy = {int(g): float(energy[groups == g].mean()) for g in np.unique(groups)}
    ranked = sorted(group_energy, key=lambda g: -group_energy[g])
    median = float(np.median(energy))
    labels: list[str] = []
    for i in range(n):
        g = int(groups[i])
        if i == 0 and n > 2 and energy[i] <= median:
            lab = "intro"
        elif i == n - 1 and n > 2 and energy[i] <= median:
            lab = "outro"
        elif g == ranked[0] and len(ranked) > 1:
            lab = "chorus"
        elif energy[i] < 0.6 * median:
            lab = "breakdown"
        elif len(ranked) > 2 and g == ranked[-1]:
            lab = "bridge"
        else:
            lab = "verse"
        labels.append(lab)
    return [Section(edges[i], edges[i + 1], labels[i], int(groups[i]), float(energy[i]), MOODS[labels[i]]) for i in range(n)]
