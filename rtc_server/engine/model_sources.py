"""Where model files come from: a local path, an ``https://`` URL or a ``gs://`` object.

A model is named by a *spec*: its source plus options after ``#``, written like a URL
fragment (the part of a URL a server never sees)::

    models/yolo11n.onnx
    https://models.example.com/yolo11s.onnx#sha256=<64 hex>&imgsz=480
    gs://my-bucket/yolo/yolo11m.onnx#sha256=<64 hex>&letterbox=square

A remote source must pin its ``sha256``: the file is downloaded once into a cache folder
(``<cache>/<sha256>/<file name>``, content-addressed, so a changed pin never reuses a
stale copy), written to a temporary file beside it and moved into place only once its
sha256 matches — a partial or mismatched download is never loaded nor kept. A local file
may pin one too. Every failure (a wrong hash, HTTP 404, a missing bucket or object, an
unreachable host, an untrusted certificate, missing credentials) is a ``ModelSourceError``
whose message says exactly which, so start-up can stop with it.

``https://`` uses the standard library (``urllib``; proxies from ``https_proxy``, CAs
from the system store or ``SSL_CERT_FILE``). ``gs://`` uses Google's own client
(``pip install 'rtc-yolo[gcs]'``): Application Default Credentials — the service account
of a GKE pod (Workload Identity) or a Cloud Run service, ``GOOGLE_APPLICATION_CREDENTIALS``
elsewhere — and ``STORAGE_EMULATOR_HOST`` for an emulator. Nothing here knows onnxruntime:
it hands a verified local path to whoever loads the model.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from .artifacts import sha256_of
from .backends import BACKENDS, PRECISIONS
from .host import package_version

log = logging.getLogger(__name__)

LETTERBOXES = ("rect", "square")
REMOTE_SCHEMES = ("https", "http", "gs")
#: Model names clients send in offers, ``?model=`` and control messages.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
#: A download larger than this is refused (a misconfigured URL must not fill the disk).
MAX_MODEL_BYTES = 4 << 30
#: Seconds of socket inactivity (https) or of retrying (gs) before a download fails.
DEFAULT_TIMEOUT = 30.0


class ModelSpecError(ValueError):
    """A model spec that cannot be understood (a configuration error)."""


class ModelSourceError(RuntimeError):
    """A model could not be fetched or did not verify; the message says exactly why."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the server should serve: a name, where its file is, how to run it.

    ``None`` options take the server-wide setting (``RTC_IMGSZ``, ``RTC_LETTERBOX``, and
    the backend/precision settings).
    """

    name: str
    source: str
    sha256: str | None = None
    imgsz: int | None = None
    letterbox: str | None = None
    backend: str | None = None
    precision: str | None = None

    @property
    def scheme(self) -> str:
        """``https``, ``http``, ``gs``, or ``""`` for a local path."""
        match = _SCHEME_RE.match(self.source)
        return match.group(1).lower() if match else ""

    @property
    def remote(self) -> bool:
        return self.scheme != ""

    @property
    def display(self) -> str:
        """The source without credentials or query (a signed URL's signature stays out of logs)."""
        if self.scheme in ("http", "https"):
            parts = urlsplit(self.source)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{host}{port}{parts.path}"
        return self.source

    @property
    def file_name(self) -> str:
        """The cached copy's file name: the source's last path segment, made safe."""
        name = PurePosixPath(urlsplit(self.source).path).name if self.remote else Path(self.source).name
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
        return name or "model.onnx"


# ----- parsing ------------------------------------------------------------------------------
def _check_options(spec: ModelSpec) -> ModelSpec:
    where = f"model {spec.name or spec.source!r}"
    if spec.scheme and spec.scheme not in REMOTE_SCHEMES:
        raise ModelSpecError(f"{where}: unsupported source {spec.display!r} (use a path, https://, http:// or gs://)")
    if spec.remote and spec.sha256 is None:
        raise ModelSpecError(f"{where}: {spec.display} has no pinned sha256; append #sha256=<64 hex digits> "
                        "(`python -m rtc_server.models hash FILE` prints it)")
    if spec.sha256 is not None and not _SHA256_RE.fullmatch(spec.sha256):
        raise ModelSpecError(f"{where}: sha256 {spec.sha256!r} is not 64 hex digits")
    if spec.scheme == "gs":
        parts = urlsplit(spec.source)
        if not parts.netloc or not parts.path.strip("/"):
            raise ModelSpecError(f"{where}: {spec.source!r} is not gs://BUCKET/OBJECT")
    if spec.scheme in ("http", "https") and not urlsplit(spec.source).hostname:
        raise ModelSpecError(f"{where}: {spec.display!r} has no host")
    if not spec.source:
        raise ModelSpecError(f"{where}: empty source")
    if spec.imgsz is not None and (spec.imgsz <= 0 or spec.imgsz % 32):
        raise ModelSpecError(f"{where}: imgsz {spec.imgsz} is not a positive multiple of 32")
    for key, allowed in (("letterbox", LETTERBOXES), ("backend", ("auto", *BACKENDS)),
                           ("precision", PRECISIONS)):
        value = getattr(spec, key)
        if value is not None and value not in allowed:
            raise ModelSpecError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
    return spec


_OPTION_KEYS = ("sha256", "imgsz", "letterbox", "backend", "precision")


def _options(pairs: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(pairs) - set(_OPTION_KEYS)
    if unknown:
        raise ModelSpecError(f"{where}: unknown option(s) {sorted(unknown)}; known: {', '.join(_OPTION_KEYS)}")
    options: dict[str, Any] = {}
    for key, value in pairs.items():
        if key == "imgsz":
            try:
                options[key] = int(value)
            except (TypeError, ValueError):
                raise ModelSpecError(f"{where}: imgsz {value!r} is not a number") from None
        else:
            options[key] = str(value).strip().lower()
    return options


def derive_name(source: str) -> str:
    """The name a source gets when none is given: its file name without extension."""
    if _SCHEME_RE.match(source):
        return PurePosixPath(urlsplit(source).path).stem
    return Path(source).stem


def parse_spec(text: str, name: str | None = None) -> ModelSpec:
    """``source[#key=value&...]`` -> ``ModelSpec``; ``name`` defaults to the file's stem."""
    source, _, fragment = text.strip().partition("#")
    source = source.strip()
    where = f"model {name!r}" if name else f"model {source!r}"
    try:
        pairs = parse_qsl(fragment, keep_blank_values=True, strict_parsing=True) if fragment else []
    except ValueError:
        raise ModelSpecError(f"{where}: options after '#' must be key=value pairs joined by '&', "
                        f"not {fragment!r}") from None
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key in seen:
            raise ModelSpecError(f"{where}: option {key!r} given twice")
        seen[key] = value
    spec = _check_options(ModelSpec(name=name or derive_name(source), source=source, **_options(seen, where)))
    if not spec.name:
        raise ModelSpecError(f"{where}: cannot derive a model name from {source!r}; name it (NAME=SOURCE)")
    return spec


def parse_specs(text: str) -> tuple[ModelSpec, ...]:
    """``RTC_MODELS``: ``name=spec,name=spec`` or a JSON list of objects.

    The JSON form (``[{"name": ..., "source": ..., "sha256": ..., "imgsz": ...}]``) takes the
    source literally: use it for a path or URL containing ``,`` or ``#``. The first model is
    the default; names must be unique.
    """
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        specs = _parse_json(text)
    else:
        specs = []
        for entry in text.split(","):
            if not entry.strip():
                continue
            name, sep, spec = entry.partition("=")
            name = name.strip()
            if not sep or not NAME_RE.fullmatch(name):
                raise ModelSpecError(f"RTC_MODELS entry {entry.strip()!r} is not NAME=SOURCE[#options] "
                                "(a name of letters, digits, '.', '_', '-')")
            specs.append(parse_spec(spec, name))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelSpecError(f"RTC_MODELS names {', '.join(duplicates)} more than once")
    return tuple(specs)


def _parse_json(text: str) -> list[ModelSpec]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"RTC_MODELS is not valid JSON: {exc}") from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ModelSpecError("RTC_MODELS in JSON is a list of objects: [{\"name\": ..., \"source\": ..., ...}]")
    known = {f.name for f in fields(ModelSpec)}
    specs = []
    for item in items:
        name, source = item.get("name"), item.get("source")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ModelSpecError(f"RTC_MODELS entry {item!r}: 'name' must be letters, digits, '.', '_', '-'")
        if not isinstance(source, str) or not source.strip():
            raise ModelSpecError(f"RTC_MODELS entry {name!r}: 'source' must be a path or URL")
        unknown = set(item) - known
        if unknown:
            raise ModelSpecError(f"RTC_MODELS entry {name!r}: unknown field(s) {sorted(unknown)}")
        options = _options({k: v for k, v in item.items() if k not in ("name", "source") and v is not None},
                           f"model {name!r}")
        specs.append(_check_options(ModelSpec(name=name, source=source.strip(), **options)))
    return specs


# ----- fetching -----------------------------------------------------------------------------
def resolve(spec: ModelSpec, cache_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """A local, verified file for ``spec``: the path itself, or the cached download.

    A local path is returned as it is (a missing file is the loader's to report) after its
    pinned sha256, if any, is checked. A remote source is downloaded only when the cache
    has no verified copy.
    """
    where = f"model {spec.name!r} ({spec.display})"
    if not spec.remote:
        path = Path(spec.source)
        if spec.sha256 is not None and path.is_file():
            actual = sha256_of(path)
            if actual != spec.sha256:
                raise ModelSourceError(f"{where}: the file's sha256 is {actual}, not the pinned {spec.sha256}")
        return path
    assert spec.sha256 is not None  # parse_spec requires it for remote sources
    target = cache_dir / spec.sha256 / spec.file_name
    if target.is_file():
        if sha256_of(target) == spec.sha256:
            log.info("%s: verified copy in the cache, %s", where, target)
            return target
        log.warning("%s: the cached copy %s does not match its sha256; downloading again", where, target)
        target.unlink(missing_ok=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise ModelSourceError(f"{where}: cannot write to the model cache {cache_dir}: {exc} "
                          "(set RTC_MODEL_CACHE to a writable folder)") from exc
    tmp = Path(tmp_name)
    started = time.perf_counter()
    try:
        with os.fdopen(fd, "wb") as out:
            if spec.scheme == "gs":
                _fetch_gs(spec, out, timeout, where)
            else:
                _fetch_http(spec, out, timeout, where)
            out.flush()
            os.fsync(out.fileno())
        actual = sha256_of(tmp)
        if actual != spec.sha256:
            raise ModelSourceError(f"{where}: the downloaded file's sha256 is {actual}, not the pinned "
                              f"{spec.sha256}; refused, nothing kept")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        if not target.exists():
            _remove_if_empty(target.parent)
    log.info("%s: downloaded %.1f MB in %.1f s, sha256 verified, cached at %s",
             where, target.stat().st_size / 1e6, time.perf_counter() - started, target)
    return target


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _copy_capped(src: IO[bytes], out: IO[bytes], where: str) -> int:
    total = 0
    for chunk in iter(lambda: src.read(1 << 20), b""):
        total += len(chunk)
        if total > MAX_MODEL_BYTES:
            raise ModelSourceError(f"{where}: larger than {MAX_MODEL_BYTES >> 30} GiB; refused")
        out.write(chunk)
    return total


def _fetch_http(spec: ModelSpec, out: IO[bytes], timeout: float, where: str) -> None:
    request = urllib.request.Request(spec.source, headers={"User-Agent": f"rtc-yolo/{package_version()}"})
    host = urlsplit(spec.source).netloc.rpartition("@")[2]
    try:
        # A fresh default context: the system CAs, or SSL_CERT_FILE / SSL_CERT_DIR if set.
        context = ssl.create_default_context() if spec.scheme == "https" else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            expected = response.headers.get("Content-Length")
            received = _copy_capped(response, out, where)
        # http.client ends a short read quietly when the peer hangs up: say so, not just "wrong hash".
        if expected is not None and expected.isdigit() and received < int(expected):
            raise ModelSourceError(f"{where}: the download from {host} broke off after {received} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        what = "not found" if exc.code == 404 else "refused"
        raise ModelSourceError(f"{where}: {what} (HTTP {exc.code} {exc.reason})") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ModelSourceError(f"{where}: the TLS certificate of {host} is not trusted ({reason.verify_message}); "
                              "for a private CA set SSL_CERT_FILE to a bundle that includes it") from None
        raise ModelSourceError(f"{where}: cannot reach {host}: {reason}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:  # a stalled read, a cut connection
        raise ModelSourceError(f"{where}: the download from {host} failed: {type(exc).__name__}: {exc}") from None


def _fetch_gs(spec: ModelSpec, out: IO[bytes], timeout: float, where: str) -> None:
    try:
        import google.auth.exceptions
        import requests
        from google.api_core import exceptions as gexc
        from google.cloud import storage
        from google.cloud.storage.retry import DEFAULT_RETRY
    except ImportError:
        raise ModelSourceError(f"{where}: gs:// models need Google's Cloud Storage client: "
                          "pip install 'rtc-yolo[gcs]' (the container image has it)") from None
    parts = urlsplit(spec.source)
    bucket_name, object_name = parts.netloc, parts.path.lstrip("/")
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
    retry = DEFAULT_RETRY.with_timeout(timeout)
    try:
        client = storage.Client(project=None)  # a download needs no project
        bucket = client.bucket(bucket_name)
        try:
            bucket.blob(object_name).download_to_file(out, timeout=timeout, retry=retry)
        except gexc.NotFound:
            try:
                exists: bool | None = bucket.exists(timeout=timeout, retry=retry)
            except gexc.GoogleAPICallError:  # e.g. no storage.buckets.get permission
                exists = None
            if exists is False:
                raise ModelSourceError(f"{where}: bucket {bucket_name!r} does not exist") from None
            raise ModelSourceError(f"{where}: no object {object_name!r} in bucket {bucket_name!r}") from None
    except google.auth.exceptions.DefaultCredentialsError:
        raise ModelSourceError(f"{where}: no Google credentials: on GKE or Cloud Run give the workload a service "
                          "account with roles/storage.objectViewer on the bucket; elsewhere set "
                          "GOOGLE_APPLICATION_CREDENTIALS") from None
    except google.auth.exceptions.GoogleAuthError as exc:
        raise ModelSourceError(f"{where}: Google credentials failed: {exc}") from None
    except gexc.Forbidden as exc:
        raise ModelSourceError(f"{where}: access denied ({exc.message}); the service account needs "
                          f"roles/storage.objectViewer on gs://{bucket_name}") from None
    except gexc.GoogleAPICallError as exc:
        raise ModelSourceError(f"{where}: Cloud Storage answered {exc.code}: {exc.message}") from None
    except (gexc.RetryError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        cause = getattr(exc, "cause", None) or exc
        raise ModelSourceError(f"{where}: cannot reach Cloud Storage at {endpoint}: {type(cause).__name__}") from None

