"""Bounds and small vocabularies of MusicVideo fields that the CRD, the API, the operator and the
renderer all enforce.

Defined once here: the API's request models and the renderer's config import them, and
crds/musicvideo.yaml states the same numbers (tests compare the CRD with these constants).
"""

from typing import Final, Literal, get_args

# spec.audio.bpm: a tempo the user knows, replacing detection. 30..300 covers everything from a
# slow ballad counted in half time to drum'n'bass counted in full.
BPM_MIN: Final = 30.0
BPM_MAX: Final = 300.0

# spec.audio.beatOffsetSeconds: the time of any one beat (e.g. the first downbeat); only with bpm.
# A beat cannot lie past the longest song the renderer accepts (2 h).
BEAT_OFFSET_MIN_SECONDS: Final = 0.0
BEAT_OFFSET_MAX_SECONDS: Final = 7200.0

# status.analysis.tempoSource / analysis.json "tempoSource": where the tempo came from.
TempoSource = Literal["detected", "given"]
TEMPO_SOURCES: Final[tuple[str, ...]] = get_args(TempoSource)
