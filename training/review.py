"""``python -m training.review list|accept|reject``: labels held for review.

A label that contradicts a confident prediction (``REVIEW_CONFIDENCE``) is stored but not
exported for training (``training.export_feedback``) until a reviewer accepts it; a rejected
one never is. Reads the image log the service writes, with the same settings (see
``training.export_feedback.ExportSettings``); the same work over HTTP is ``/admin/reviews``.

    python -m training.review list [--state pending|accepted|rejected] [--limit N]
    python -m training.review accept ID [ID …]
    python -m training.review reject ID [ID …]
"""

from __future__ import annotations

import argparse
import sys

from imagelog import ImageLog, StorageError, open_image_log
from imagelog.base import REVIEW_STATES
from training.export_feedback import ExportSettings


def list_held(image_log: ImageLog, state: str, limit: int) -> list[str]:
    """One line per held label: id, record, label, what the model said and how sure."""
    return [
        f"{h.id}\t{h.request_id}\tlabel {h.label}\tmodel {h.digit} at {h.confidence:.3f}"
        f"\t{h.labelled_at.isoformat(timespec='seconds')}\t{h.review}"
        for h in image_log.held(state, limit=limit)
    ]


def decide(image_log: ImageLog, ids: list[int], accept: bool) -> list[int]:
    """Accept or reject each held label; returns the ids that are not held labels."""
    return [label_id for label_id in ids if not image_log.review(label_id, accept=accept)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="labels held for review")
    listing.add_argument("--state", choices=REVIEW_STATES, default="pending")
    listing.add_argument("--limit", type=int, default=100)
    for name in ("accept", "reject"):
        command = commands.add_parser(name, help=f"{name} held labels by id")
        command.add_argument("ids", type=int, nargs="+", metavar="ID")
    args = parser.parse_args(argv)
    try:
        with open_image_log(ExportSettings()) as image_log:
            if args.command == "list":
                lines = list_held(image_log, args.state, max(args.limit, 1))
                print("\n".join(lines) if lines else f"no {args.state} labels")
                return 0
            unknown = decide(image_log, args.ids, accept=args.command == "accept")
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = len(args.ids) - len(unknown)
    print(f"{args.command}ed {done} label(s)")
    if unknown:
        print(f"not held for review: {' '.join(map(str, unknown))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
