"""Names the operator writes into the cluster: phases, reasons, condition types, labels, annotations."""

from typing import Final

from vibecraft_common.resource import (
    EXIT_BAD_AUDIO,
    EXIT_DOWNLOAD_FAILED,
    EXIT_INTERNAL,
    EXIT_MEMORY_GUARD,
    EXIT_REPLICATE_FAILED,
    EXIT_UPLOAD_FAILED,
    EXIT_USAGE,
    GROUP,
)

# Phases (status.phase).
PENDING: Final = "Pending"
QUEUED: Final = "Queued"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
CANCELLED: Final = "Cancelled"
PHASES: Final = (PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

# Condition types (status.conditions[].type).
COND_READY: Final = "Ready"  # the video is rendered and uploaded
COND_PROGRESSING: Final = "Progressing"  # a render is queued, running or waiting for a retry
COND_SUSPENDED: Final = "Suspended"  # spec.suspend is honoured: no Job runs

# Reasons, used for conditions, lastFailure.reason and Kubernetes Events alike.
R_ACCEPTED: Final = "Accepted"
R_QUEUED: Final = "Queued"
R_KUEUE: Final = "WaitingForKueue"
R_JOB_CREATED: Final = "JobCreated"
R_RENDERING: Final = "Rendering"
R_RETRYING: Final = "Retrying"
R_SUCCEEDED: Final = "Succeeded"
R_CANCELLED: Final = "Cancelled"
R_SUSPENDED: Final = "Suspended"
R_RESUMED: Final = "Resumed"
R_SPEC_CHANGED: Final = "SpecChanged"
R_OOM_KILLED: Final = "OOMKilled"
R_PROBABLE_OOM: Final = "ProbableOOMKill"
R_MEMORY_GUARD: Final = "MemoryGuard"
R_DISRUPTED: Final = "Disrupted"
R_POD_DELETED: Final = "PodDeleted"
R_POD_VANISHED: Final = "PodVanished"
R_JOB_VANISHED: Final = "JobVanished"
R_DEADLINE: Final = "DeadlineExceeded"
R_JOB_NAME_TAKEN: Final = "JobNameTaken"
R_OUTPUTS_UNAVAILABLE: Final = "OutputsUnavailable"
R_ERROR: Final = "Error"

# Renderer exit code -> failure reason; the termination message carries the detail.
EXIT_REASONS: Final = {
    EXIT_INTERNAL: "InternalError",
    EXIT_USAGE: "UsageError",
    EXIT_BAD_AUDIO: "BadAudio",
    EXIT_DOWNLOAD_FAILED: "DownloadFailed",
    EXIT_UPLOAD_FAILED: "UploadFailed",
    EXIT_REPLICATE_FAILED: "ReplicateFailed",
    EXIT_MEMORY_GUARD: R_MEMORY_GUARD,
}
# Exit codes a retry cannot fix: the same spec and the same audio fail the same way.
PERMANENT_EXIT_CODES: Final = frozenset({EXIT_USAGE, EXIT_BAD_AUDIO})

# Container, labels and annotations on the Jobs and Pods the operator creates.
CONTAINER_NAME: Final = "renderer"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "vibecraft-operator"
LABEL_APP: Final = "app.kubernetes.io/name"
APP: Final = "vibecraft"
COMPONENT_RENDERER: Final = "renderer"
ANNOTATION_MV_NAME: Final = f"{GROUP}/musicvideo-name"  # the full name; a label value is capped at 63
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"  # which spec a Job renders
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"

# The renderer's memory guard reads its limit (in MiB, via the downward API) from this env.
ENV_MEMORY_LIMIT_MB: Final = "VIBECRAFT_MEMORY_LIMIT_MB"
# Writable scratch space (the root filesystem is read-only); not /tmp, which the local node agent
# would mount over its own state directory.
SCRATCH_DIR: Final = "/scratch"
