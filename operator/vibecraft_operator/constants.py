"""Names the operator writes into the cluster: reasons, condition types, labels, annotations (phases: vibecraft_common)."""

from typing import Final

from vibecraft_common.resource import EXIT_MEMORY_GUARD, EXIT_REASONS, EXIT_REPLICATE_BUDGET, GROUP
from vibecraft_common.status import CANCELLED, QUEUED, SUCCEEDED

# kopf's finalizer on every MusicVideo (our name instead of kopf's default, so `kubectl get -o yaml` says whose):
# a deleted one goes once its reconciler has stopped and its render's files are cleaned out of S3.
FINALIZER: Final = f"{GROUP}/reconciler"

# Condition types (status.conditions[].type).
COND_READY: Final = "Ready"  # the video is rendered and uploaded
COND_PROGRESSING: Final = "Progressing"  # a render is queued, running or waiting for a retry
COND_SUSPENDED: Final = "Suspended"  # spec.suspend is honoured: no Job runs

# Reasons, used for conditions, lastFailure.reason and Kubernetes Events alike.
R_ACCEPTED: Final = "Accepted"
R_QUEUED: Final = QUEUED  # reasons named like a phase are that phase's name
R_KUEUE: Final = "WaitingForKueue"
R_JOB_CREATED: Final = "JobCreated"
R_RENDERING: Final = "Rendering"
R_RETRYING: Final = "Retrying"
R_SUCCEEDED: Final = SUCCEEDED
R_CANCELLED: Final = CANCELLED
R_SUSPENDED: Final = "Suspended"
R_RESUMED: Final = "Resumed"
R_SPEC_CHANGED: Final = "SpecChanged"
R_OOM_KILLED: Final = "OOMKilled"
R_PROBABLE_OOM: Final = "ProbableOOMKill"
R_MEMORY_GUARD: Final = EXIT_REASONS[EXIT_MEMORY_GUARD]
R_REPLICATE_BUDGET: Final = EXIT_REASONS[EXIT_REPLICATE_BUDGET]  # the namespace's month is used up
R_AWAITING_BUDGET: Final = "AwaitingReplicateBudget"  # what is left is reserved by renders running now
R_DISRUPTED: Final = "Disrupted"
R_DISK_FULL: Final = "DiskFull"  # the pod outgrew its scratch sizeLimit or ephemeral-storage limit
R_POD_DELETED: Final = "PodDeleted"
R_POD_VANISHED: Final = "PodVanished"
R_JOB_VANISHED: Final = "JobVanished"
R_DEADLINE: Final = "DeadlineExceeded"
R_INVALID_SPEC: Final = "InvalidSpec"  # the spec passed the CRD but the operator cannot render it
R_JOB_NAME_TAKEN: Final = "JobNameTaken"
R_JOB_REFUSED: Final = "JobRefused"  # the API server refused the Job for good (RBAC, admission, quota past the wait)
R_OUTPUTS_UNAVAILABLE: Final = "OutputsUnavailable"
R_ERROR: Final = "Error"

# Kubernetes' own vocabulary (Pod phases, Job condition types): not ours to define, named once here.
POD_RUNNING: Final = "Running"
POD_FAILED: Final = "Failed"
POD_SUCCEEDED: Final = "Succeeded"
JOB_COMPLETE: Final = "Complete"
JOB_FAILED: Final = "Failed"

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

# Writable scratch space (the root filesystem is read-only); not /tmp, which the local node agent
# would mount over its own state directory.
SCRATCH_DIR: Final = "/scratch"
