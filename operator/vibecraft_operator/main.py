"""`vibecraft-operator`: run kopf with the handlers, peering, liveness and namespace selection."""

import argparse
import logging
import sys
from collections.abc import Sequence

import kopf
from pydantic import ValidationError

from vibecraft_operator.settings import Settings

QUIET_HANDLERS = ("musicvideo_event", "job_event", "pod_event")


class QuietWakeups(logging.Filter):
    """Drop kopf's "Handler 'pod_event' succeeded." lines: one per watch event, and they only wake."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("succeeded.") and any(f"'{h}'" in message for h in QUIET_HANDLERS))


LOG_FORMATS = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}


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
    parser.add_argument("--log-format", choices=sorted(LOG_FORMATS), default=settings.log_format)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"vibecraft-operator: invalid VIBECRAFT_* settings:\n{exc}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings)
    namespaces = [] if args.all_namespaces else (args.namespaces or settings.namespaces)
    kopf.configure(log_format=LOG_FORMATS[args.log_format], verbose=args.verbose, debug=args.debug)
    if not args.debug:
        logging.getLogger("kopf.objects").addFilter(QuietWakeups())

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
