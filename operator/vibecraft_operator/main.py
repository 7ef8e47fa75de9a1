"""`vibecraft-operator`: run kopf with the handlers, peering, liveness and namespace selection."""

import argparse
import copy
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import kopf
from pydantic import ValidationError

from vibecraft_operator import heap
from vibecraft_operator.settings import Settings

# kopf's "Handler 'pod_event' succeeded." lines: one per watch event, and they only wake a reconciler.
# "Daemon 'musicvideo_reconciler' succeeded." only means the loop returned (after a Failed render
# too): the reconciler logs why it stopped instead (handlers.stopped_message).
QUIET_HANDLERS = ("musicvideo_event", "job_event", "pod_event", "musicvideo_reconciler")


class QuietWakeups(logging.Filter):
    """Drop kopf's "... succeeded." lines of the QUIET_HANDLERS."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("succeeded.") and any(f"'{h}'" in message for h in QUIET_HANDLERS))


class ObjectTextFormatter(logging.Formatter):
    """Text lines with a UTC timestamp and, for records about one object, its `[namespace/name]`.

    kopf's object loggers (the `logger` of every handler and of the reconciler) carry the object in
    `record.k8s_ref`; without the prefix, "Queued: waiting for a render slot" would not say whose.
    """

    converter = staticmethod(time.gmtime)  # UTC, like the API server's timestamps
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def format(self, record: logging.LogRecord) -> str:
        ref: Any = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            namespace, name = ref.get("namespace"), ref["name"]
            record = copy.copy(record)
            record.msg = f"[{namespace}/{name}] {record.msg}" if namespace else f"[{name}] {record.msg}"
        return super().format(record)


# json: kopf's JSON lines ("timestamp", "severity", "message" and the object as "object").
TEXT_FORMATS = {
    "plain": "%(asctime)s %(levelname)-7s %(message)s",
    "full": "%(asctime)s %(name)-20.20s %(levelname)-7s %(message)s",
}
LOG_FORMATS = ("json", *TEXT_FORMATS)


def configure_logging(log_format: str, *, verbose: bool = False, debug: bool = False) -> logging.Handler:
    """Set up the root logger (via kopf, for its levels and handler) in `log_format`; returns the handler."""
    kopf.configure(log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
                   verbose=verbose, debug=debug)
    handler = logging.getLogger().handlers[-1]  # kopf.configure appends its handler (replacing its earlier one)
    if log_format != "json":
        handler.setFormatter(ObjectTextFormatter(TEXT_FORMATS[log_format]))
    objects = logging.getLogger("kopf.objects")
    for old in [f for f in objects.filters if isinstance(f, QuietWakeups)]:
        objects.removeFilter(old)
    if not debug:
        objects.addFilter(QuietWakeups())
    return handler


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    """Command-line flags; each defaults to its VIBECRAFT_* setting."""
    parser = argparse.ArgumentParser(prog="vibecraft-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", default=None,
                       help="watch this namespace (repeatable; globs allowed); default VIBECRAFT_NAMESPACES")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", default=settings.standalone,
                         help="no leader election (only one replica may run)")
    peering.add_argument("--peering", default=None, metavar="NAME",
                         help="require the ClusterKopfPeering NAME (else VIBECRAFT_PEERING_NAME, if present)")
    parser.add_argument("--priority", type=int, default=settings.peering_priority,
                        help="peering priority; the highest-priority replica works, the others wait")
    parser.add_argument("--liveness", default=settings.liveness_endpoint, metavar="URL",
                        help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz ('' = none)")
    parser.add_argument("--log-format", choices=sorted(LOG_FORMATS), default=settings.log_format,
                        help="json (for log collectors) or plain/full text; each line has a timestamp and the object")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    heap.tune()  # before the watches start allocating (see heap.py)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"vibecraft-operator: invalid VIBECRAFT_* settings:\n{exc}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings)
    namespaces = [] if args.all_namespaces else (args.namespaces or settings.namespaces)
    configure_logging(args.log_format, verbose=args.verbose, debug=args.debug)

    from vibecraft_operator import handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True if args.standalone else None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
