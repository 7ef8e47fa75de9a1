"""Identity of the MusicVideo custom resource and the env contract between operator and renderer.

Operator, renderer and API never import each other; everything they must agree on lives here.
"""

from typing import Final, Literal

GROUP: Final = "vibecraft.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "MusicVideo"
PLURAL: Final = "musicvideos"
SINGULAR: Final = "musicvideo"
SHORT_NAME: Final = "mv"

# Env vars the operator sets on the renderer container. When ENV_MV_NAME is set the renderer
# reports progress by patching status.progress of that MusicVideo instead of drawing a terminal bar.
ENV_MV_NAME: Final = "VIBECRAFT_MUSICVIDEO_NAME"
ENV_MV_NAMESPACE: Final = "VIBECRAFT_MUSICVIDEO_NAMESPACE"
ENV_SPEC_JSON: Final = "VIBECRAFT_SPEC_JSON"  # the MusicVideo spec (JSON) the renderer renders
ENV_ATTEMPT: Final = "VIBECRAFT_ATTEMPT"
# The renderer's memory guard reads its limit (in MiB, via the downward API) from this env.
ENV_MEMORY_LIMIT_MB: Final = "VIBECRAFT_MEMORY_LIMIT_MB"
# Renderer runtime knobs that are not part of the spec (the CLI has flags for them too).
ENV_SEGMENT_SECONDS: Final = "VIBECRAFT_SEGMENT_SECONDS"
ENV_WORK_DIR: Final = "VIBECRAFT_WORK_DIR"
ENV_TERMINATION_LOG: Final = "VIBECRAFT_TERMINATION_LOG"  # where the one-line failure reason goes (tests)
ENV_NUMBA_SEED: Final = "VIBECRAFT_NUMBA_CACHE_SEED"  # read-only numba cache baked into the image
# Networks the renderer may download from although they are loopback, link-local or private (on-prem
# storage): comma-separated CIDRs such as "10.20.0.0/16,fd00:1::/64"; empty (the default) allows none.
ENV_EGRESS_ALLOW: Final = "VIBECRAFT_EGRESS_ALLOW_CIDRS"
# The most Replicate predictions this attempt may create (what is left of its namespace's monthly
# budget); unset means no budget. Cached images cost nothing.
ENV_REPLICATE_MAX_PREDICTIONS: Final = "VIBECRAFT_REPLICATE_MAX_PREDICTIONS"
# A render split over several pods (issue 20): which part of it this container does (RenderStage), and
# for STAGE_SEGMENTS into how many chunks the segments are split; the chunk itself is the Indexed
# Job's completion index, which Kubernetes puts into ENV_COMPLETION_INDEX.
ENV_STAGE: Final = "VIBECRAFT_STAGE"
ENV_CHUNKS: Final = "VIBECRAFT_CHUNKS"
ENV_COMPLETION_INDEX: Final = "JOB_COMPLETION_INDEX"
# Seconds a chunk other than the first waits for the render plan before preparing it itself (default 180).
ENV_PLAN_WAIT: Final = "VIBECRAFT_PLAN_WAIT_SECONDS"
STAGE_ALL: Final = "all"  # everything in one process (the CLI's default, parallelism 1)
STAGE_PREPARE: Final = "prepare"  # download, analyse, encode the soundtrack, publish the render plan
STAGE_SEGMENTS: Final = "segments"  # one chunk of the segments, from the published plan
STAGE_JOIN: Final = "join"  # concatenate every segment, mux the soundtrack, publish the outputs
RenderStage = Literal["all", "prepare", "segments", "join"]
RENDER_STAGES: Final[tuple[RenderStage, ...]] = (STAGE_ALL, STAGE_PREPARE, STAGE_SEGMENTS, STAGE_JOIN)

# Labels on Jobs/Pods linking back to their MusicVideo.
LABEL_NAME: Final = f"{GROUP}/musicvideo"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"

# On MusicVideos. The operator keeps LABEL_FINISHED ("true") on every finished one that is not being
# deleted, so a client counting renders in progress lists `!vibecraft.io/finished` instead of a whole
# namespace of finished videos.
LABEL_FINISHED: Final = f"{GROUP}/finished"
FINISHED: Final = "true"
# "true": deleting the MusicVideo deletes everything under its output prefix, the finished video too
# (the API sets it: a video deleted through the API goes with its files). Without it a Succeeded
# video's outputs are kept; checkpoints, cache and unfinished outputs always go.
ANNOTATION_DELETE_OUTPUTS: Final = f"{GROUP}/delete-outputs"

# Renderer exit codes (also written as a one-line reason to the termination log).
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
EXIT_BAD_AUDIO: Final = 10
EXIT_DOWNLOAD_FAILED: Final = 11
EXIT_UPLOAD_FAILED: Final = 12
EXIT_REPLICATE_FAILED: Final = 13
EXIT_MEMORY_GUARD: Final = 14
EXIT_INPUT_NOT_FOUND: Final = 15  # the input's server answered: no such object, file or bucket
EXIT_REPLICATE_BUDGET: Final = 16  # the render needs more new Replicate images than its budget allows
EXIT_BAD_LYRICS: Final = 17  # spec.lyrics cannot be read as timed lyrics (renderer/captions.py)
EXIT_INTERNAL: Final = 1

# What each exit code means, as the failure reason the operator records (status.lastFailure.reason).
EXIT_REASONS: Final = {
    EXIT_INTERNAL: "InternalError",
    EXIT_USAGE: "UsageError",
    EXIT_BAD_AUDIO: "BadAudio",
    EXIT_DOWNLOAD_FAILED: "DownloadFailed",
    EXIT_UPLOAD_FAILED: "UploadFailed",
    EXIT_REPLICATE_FAILED: "ReplicateFailed",
    EXIT_MEMORY_GUARD: "MemoryGuard",
    EXIT_INPUT_NOT_FOUND: "InputNotFound",
    EXIT_REPLICATE_BUDGET: "ReplicateBudgetExceeded",
    EXIT_BAD_LYRICS: "BadLyrics",
}
# Exit codes a retry cannot fix (failure class "permanent"): the same spec and audio fail the same way,
# and a URL whose object (or bucket) does not exist is looked up again and found missing again.
# A used-up Replicate budget stays used up until the month ends.
PERMANENT_EXIT_CODES: Final = frozenset({EXIT_USAGE, EXIT_BAD_AUDIO, EXIT_INPUT_NOT_FOUND, EXIT_REPLICATE_BUDGET,
                                         EXIT_BAD_LYRICS})

TERMINATION_LOG: Final = "/dev/termination-log"
