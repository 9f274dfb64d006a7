"""COCO mAP50-95 / mAP50 of every backend x precision this machine runs, as a bench.

A thin bench entry for ``python -m rtc_server.models accuracy`` (``rtc_server/models/
accuracy.py`` measures and, with ``--write``, writes the record ``RTC_BACKEND=auto``
reads): the same options, the model found as every bench finds it (``$RTC_MODEL``,
``../shared/models/``, ``models/``), and the bench's one final JSON line.

    python -m bench.accuracy [--images ../shared/data/coco128/images/train2017] [--write]
"""

from __future__ import annotations

import argparse
import sys

from bench.common import ROOT, emit, find_model, load
from rtc_server.models.accuracy import run
from rtc_server.models.cli import add_accuracy_arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_accuracy_arguments(parser)
    parser.set_defaults(images=ROOT.parent / "shared/data/coco128/images/train2017")
    args = parser.parse_args()
    load_start = load()
    args.model = find_model(args.model)
    try:
        result = run(args, command=" ".join(["python -m bench.accuracy", *sys.argv[1:]]))
    except ValueError as exc:
        parser.error(str(exc))
    emit("accuracy", result.summary(), load_start)


if __name__ == "__main__":
    main()
