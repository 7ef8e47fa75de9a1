"""The operator's one typed settings object, read from VIBECRAFT_* env vars (set by the Helm chart)."""

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from vibecraft_common.limits import (
    PARALLELISM_MAX,
    PARALLELISM_MIN,
    PREDICTIONS_PER_RENDER,
    TTL_AFTER_FINISHED_MAX_SECONDS,
)

from vibecraft_operator.quantities import parse_quantity


class Settings(BaseSettings):
    """Everything tunable about the operator; each field maps to `VIBECRAFT_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="VIBECRAFT_", frozen=True, extra="ignore")

    # The renderer Job.
    renderer_image: str = "vibecraft/renderer:0.1.0"
    renderer_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    renderer_command: list[str] = []  # JSON; replaces the image's entrypoint (wrappers, tests); [] = keep it
    renderer_service_account: str = "vibecraft-renderer"
    s3_secret_name: str = "vibecraft-s3"  # keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    replicate_secret_name: str = "vibecraft-replicate"  # key REPLICATE_API_TOKEN; optional
    s3_endpoint: str = ""  # AWS_ENDPOINT_URL for the renderer and the operator; "" = AWS
    s3_region: str = "us-east-1"
    job_ttl_seconds: int = Field(default=86400, ge=0)
    # A render pod that cannot start (unschedulable, image not pulled, container not created: a missing
    # Secret) for this long fails the render and frees its slot, instead of holding it until the deadline.
    startup_timeout_seconds: float = Field(default=600.0, gt=0)
    # spec.parallelism "auto" (and any number) is capped here: pods one render may split over.
    max_parallelism: int = Field(default=4, ge=PARALLELISM_MIN, le=PARALLELISM_MAX)
    # Seconds a finished MusicVideo is kept when its spec.ttlSecondsAfterFinished is unset; None: forever.
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=TTL_AFTER_FINISHED_MAX_SECONDS)

    # Resources when spec.resources leaves them out.
    default_memory: str = "512Mi"  # the base every render needs
    memory_per_megapixel: str = "256Mi"  # added per megapixel of output frame
    default_cpu: str = "1"
    default_max_memory: str = "8Gi"  # the OOM-escalation ceiling without spec.resources.maxMemory
    # The scratch emptyDir's sizeLimit: input, segments, the numba cache. The kubelet evicts a pod
    # that outgrows it (the attempt fails as DiskFull) instead of letting it fill the node's disk.
    scratch_size_limit: str = "10Gi"
    # The ephemeral-storage request (what the scheduler reserves on a node) assumes a song this long: its
    # length is not known before the render (estimate_scratch). Never above scratch_size_limit.
    scratch_request_song_seconds: int = Field(default=600, ge=0, le=7200)
    # Networks the renderer may download audio and Replicate outputs from although they are loopback,
    # link-local or private (on-prem storage): comma-separated CIDRs, passed to the renderer's Job as the
    # same env var. Empty: only public addresses (the renderer's egress guard, renderer/egress.py).
    egress_allow_cidrs: str = ""

    # Replicate predictions per tenant namespace and calendar month (operator/budget.py): the default
    # for every namespace (None = no budget), and per-namespace values (JSON object) that replace it.
    # The count is kept in the ConfigMap `usage_configmap` in `usage_namespace` (the operator's own).
    replicate_monthly_budget: int | None = Field(default=None, ge=0)
    # The most predictions one attempt may create, budget or not (the renderer plans at most 24 images).
    replicate_max_predictions_per_render: int = Field(default=PREDICTIONS_PER_RENDER, ge=1)
    replicate_namespace_budgets: dict[str, Annotated[int, Field(ge=0)]] = {}
    usage_namespace: str = "vibecraft-system"
    usage_configmap: str = "vibecraft-replicate-usage"

    # Concurrency: 0 means unlimited.
    max_running: int = Field(default=0, ge=0)
    max_running_per_namespace: int = Field(default=0, ge=0)

    # Retries of failed attempts (OOM and disruptions retry at once).
    retry_backoff_seconds: float = Field(default=10.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0)

    # Watching and serving.
    namespaces: Annotated[list[str], NoDecode] = []  # comma-separated; empty = all namespaces
    metrics_port: int = Field(default=9090, ge=0, le=65535)  # 0 = no metrics server
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"  # "" = no liveness endpoint
    log_format: Literal["json", "plain", "full"] = "json"
    peering_name: str = "vibecraft"
    peering_priority: int = 0
    standalone: bool = False
    resync_seconds: float = Field(default=30.0, gt=0)  # re-check of every active render
    api_timeout_seconds: float = Field(default=30.0, gt=0)

    # Reading analysis.json and the video's size back from S3 on success.
    fetch_outputs: bool = True
    outputs_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("egress_allow_cidrs")
    @classmethod
    def _are_cidrs(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part:
                ipaddress.ip_network(part, strict=False)  # raises ValueError naming the bad entry
        return value

    @field_validator("default_memory", "memory_per_megapixel", "default_max_memory", "default_cpu", "scratch_size_limit")
    @classmethod
    def _is_quantity(cls, value: str) -> str:
        parse_quantity(value)  # raises ValueError with a readable message
        return value
