"""Domain errors of the renderer; each one maps to a process exit code the operator can act on.

The CLI translates them at the edge (cli.main): one-line reason to stderr and the termination log,
exit code from vibecraft_common.resource.
"""

from __future__ import annotations

from vibecraft_common.resource import (
    EXIT_BAD_AUDIO,
    EXIT_BAD_LYRICS,
    EXIT_DOWNLOAD_FAILED,
    EXIT_INPUT_NOT_FOUND,
    EXIT_INTERNAL,
    EXIT_MEMORY_GUARD,
    EXIT_REPLICATE_BUDGET,
    EXIT_REPLICATE_FAILED,
    EXIT_UPLOAD_FAILED,
    EXIT_USAGE,
)


class RenderError(Exception):
    """Base of every failure the renderer reports with a specific exit code."""

    exit_code: int = EXIT_INTERNAL

    def reason(self) -> str:
        """One-line reason for the termination log (Kubernetes shows it in the pod status)."""
        text = " ".join(str(self).split())
        return text[:1000] if text else type(self).__name__


class UsageError(RenderError):
    """The command line or the MusicVideo spec is invalid; retrying cannot help."""

    exit_code = EXIT_USAGE


class InputTooLargeError(UsageError):
    """A small input (a lyrics file) is over its size bound; its reader says which input (captions.load)."""


class BadAudioError(RenderError):
    """The input is not usable audio: not decodable, empty, silent or too long."""

    exit_code = EXIT_BAD_AUDIO


class BadLyricsError(RenderError):
    """spec.lyrics is not usable: empty, no timestamps, times that do not parse or lie past the song, too big."""

    exit_code = EXIT_BAD_LYRICS


class DownloadError(RenderError):
    """The input audio could not be fetched (unreachable URL, missing bucket/key, HTTP error)."""

    exit_code = EXIT_DOWNLOAD_FAILED


class InputNotFoundError(DownloadError):
    """The input's store answered that it does not exist (S3 key or bucket, HTTP 404/410, local file).

    Permanent (vibecraft_common.resource.PERMANENT_EXIT_CODES): the same URL is looked up again on a
    retry and finds the same nothing, so retrying would only delay the failure the user must fix.
    """

    exit_code = EXIT_INPUT_NOT_FOUND


class UploadError(RenderError):
    """An output could not be written (missing bucket, denied, disk full)."""

    exit_code = EXIT_UPLOAD_FAILED


class ReplicateFailedError(RenderError):
    """Image generation through Replicate failed (no token, model error, retries exhausted)."""

    exit_code = EXIT_REPLICATE_FAILED


class ReplicateBudgetError(ReplicateFailedError):
    """The render needs more new Replicate images than its namespace's monthly budget has left.

    Permanent: the budget does not grow back before the month ends (docs/security.md).
    """

    exit_code = EXIT_REPLICATE_BUDGET


class MemoryGuardError(RenderError):
    """The renderer stopped itself before the kernel's OOM killer would (resident memory over limit)."""

    exit_code = EXIT_MEMORY_GUARD


class EncodeError(RenderError):
    """ffmpeg failed while encoding or muxing; a bug or a broken environment, not bad input."""

    exit_code = EXIT_INTERNAL


class StageError(RenderError):
    """A stage of a split render found what an earlier stage should have left missing or different
    (no render plan, a plan for another spec, unrendered segments at the join): the operator ran
    stages out of order or a store lost objects. Retryable: the next attempt prepares again."""

    exit_code = EXIT_INTERNAL
