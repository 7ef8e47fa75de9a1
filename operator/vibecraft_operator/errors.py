"""Domain errors of the operator; the kopf handlers translate them at the edge."""


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class InvalidSpec(OperatorError):
    """The MusicVideo spec passed the CRD schema but cannot be rendered as written."""


class JobNameTaken(OperatorError):
    """A Job with the attempt's deterministic name exists but belongs to someone else."""


class ApiUnavailable(OperatorError):
    """A Kubernetes API call failed in a way that retrying later may fix."""


class OutputsUnavailable(OperatorError):
    """analysis.json or the video could not be read back from S3 after a successful render."""
