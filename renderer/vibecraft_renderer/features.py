"""Streaming STFT features: the only pass over the audio samples, in bounded memory.

PCM arrives in blocks from the decoder; frames are cut with the same centring and padding as
librosa's stft(center=True), so the onset envelope equals librosa.onset.onset_strength on the
whole signal (checked in tests). Per 23 ms hop only ~35 floats are kept (onset strength, bass/mid/
high band onset strength, RMS, 3 band energies, 12 chroma, 13 MFCC): 25 MB for an hour, never the STFT.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .audio import SAMPLE_RATE

F32 = npt.NDArray[np.float32]

SR: Final = SAMPLE_RATE
N_FFT: Final = 2048
HOP: Final = 512
N_MELS: Final = 128
N_MFCC: Final = 13
FRAME_RATE: Final = SR / HOP
BATCH_FRAMES: Final = 1024
BANDS_HZ: Final = ((20.0, 250.0), (250.0, 2500.0), (2500.0, SR / 2))
BASS_HZ: Final = 150.0  # kick drums live below this
MID_HZ: Final = 1500.0  # bass..this: snare and tom bodies, chord and bass attacks; little of a hi-hat
HIGH_HZ: Final = 4000.0  # above: hi-hats and cymbals, and the noise of snares and claps
TOP_DB: Final = 80.0


class FeatureStream:
    """STFT-based features computed incrementally; push() PCM blocks, then finish()."""

    def __init__(self) -> None:
        import librosa  # librosa.filters costs ~1 s of scipy imports: preloaded (analysis.preload)

        # Periodic Hann, as scipy.signal.get_window("hann", fftbins=True) that librosa uses.
        self._window: F32 = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
        self._mel_fb: F32 = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32).T
        self._chroma_fb: F32 = librosa.filters.chroma(sr=SR, n_fft=N_FFT).astype(np.float32).T
        freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
        self._band_masks = [(freqs >= lo) & (freqs < hi) for lo, hi in BANDS_HZ]
        # Centered frames (as librosa's default center=True): frame k is centred on sample k*HOP.
        self._buf: F32 = np.zeros(N_FFT // 2, dtype=np.float32)
        self._frames_done = 0
        self._prev_db: F32 | None = None
        self._db_max = -np.inf
        self.n_samples = 0
        self.peak = 0.0
        self._flux: list[F32] = []
        mel_freqs = librosa.mel_frequencies(n_mels=N_MELS + 2, fmax=SR / 2)[1:-1]
        # Band onset strengths for the beat tracker, each the flux over the mel bins of its band.
        self._band_flux: dict[str, tuple[npt.NDArray[np.bool_], list[F32]]] = {
            "bass_env": (mel_freqs < BASS_HZ, []),
            "mid_env": ((mel_freqs >= BASS_HZ) & (mel_freqs < MID_HZ), []),
            "high_env": (mel_freqs >= HIGH_HZ, []),
        }
        self._rms: list[F32] = []
        self._bands: list[F32] = []
        self._chroma: list[F32] = []
        self._mfcc: list[F32] = []

    def push(self, samples: F32) -> None:
        """Consume one block of mono PCM at SR."""
        if samples.size == 0:
            return
        self.n_samples += samples.size
        self.peak = max(self.peak, float(np.max(np.abs(samples))))
        self._buf = np.concatenate([self._buf, samples])
        self._drain(limit=None)

    def _drain(self, limit: int | None) -> None:
        while True:
            available = (self._buf.size - N_FFT) // HOP + 1 if self._buf.size >= N_FFT else 0
            if limit is not None:
                available = min(available, limit - self._frames_done)
            if available <= 0:
                return
            count = min(available, BATCH_FRAMES)
            span = (count - 1) * HOP + N_FFT
            frames = np.lib.stride_tricks.sliding_window_view(self._buf[:span], N_FFT)[::HOP]
            self._features(frames)
            self._frames_done += count
            self._buf = self._buf[count * HOP :].copy()

    def _features(self, frames: F32) -> None:
        from scipy.fft import dct

        spec = np.fft.rfft(frames * self._window, axis=1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        mel = power @ self._mel_fb
        mel_db = 10.0 * np.log10(np.maximum(mel, 1e-10))
        # librosa clamps at max-80 dB over the whole song; a running max is the streaming equivalent.
        self._db_max = max(self._db_max, float(mel_db.max()))
        mel_db = np.maximum(mel_db, self._db_max - TOP_DB).astype(np.float32)
        prev = self._prev_db if self._prev_db is not None else mel_db[:1]
        stacked = np.concatenate([prev, mel_db], axis=0)
        rise = np.maximum(0.0, np.diff(stacked, axis=0))
        self._prev_db = mel_db[-1:].copy()
        self._flux.append(rise.mean(axis=1).astype(np.float32))
        for mels, parts in self._band_flux.values():
            parts.append(rise[:, mels].mean(axis=1).astype(np.float32))
        self._rms.append(np.sqrt(np.mean(frames.astype(np.float32) ** 2, axis=1)))
        self._bands.append(
            np.stack([np.log10(power[:, m].sum(axis=1) + 1e-10) for m in self._band_masks]).astype(np.float32)
        )
        chroma = power @ self._chroma_fb
        chroma /= np.maximum(chroma.max(axis=1, keepdims=True), 1e-10)
        self._chroma.append(chroma.T.astype(np.float32))
        self._mfcc.append(dct(mel_db, type=2, norm="ortho", axis=1)[:, :N_MFCC].T.astype(np.float32))

    def finish(self) -> dict[str, npt.NDArray[Any]]:
        """Flush the tail (end padding like librosa) and return per-frame feature arrays."""
        n = 1 + self.n_samples // HOP
        remaining = n - self._frames_done
        need = (remaining - 1) * HOP + N_FFT
        if self._buf.size < need:
            self._buf = np.concatenate([self._buf, np.zeros(need - self._buf.size, np.float32)])
        self._drain(limit=n)
        return {
            "onset_env": _align_flux(self._flux, n),
            **{name: _align_flux(parts, n) for name, (_, parts) in self._band_flux.items()},
            "rms": np.concatenate(self._rms)[:n],
            "bands": np.concatenate(self._bands, axis=1)[:, :n],
            "chroma": np.concatenate(self._chroma, axis=1)[:, :n],
            "mfcc": np.concatenate(self._mfcc, axis=1)[:, :n],
        }


def _align_flux(parts: list[F32], n: int) -> F32:
    """Same alignment as librosa.onset.onset_strength(center=True): lag 1 plus n_fft/(2*hop)."""
    raw = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    raw[:1] = 0.0
    shift = 1 + N_FFT // (2 * HOP)
    env = np.zeros(n, dtype=np.float32)
    if n > shift:
        env[shift:] = raw[1 : n - shift + 1]
    return env
