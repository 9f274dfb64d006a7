"""Model specs: ``RTC_MODEL`` / ``RTC_MODELS`` syntax, pinned hashes, per-model options."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtc_server.app import load_models
from rtc_server.config import ConfigError, Settings, load_settings
from rtc_server.engine.detector import ModelError
from rtc_server.engine.model_sources import (
    ModelSourceError,
    ModelSpec,
    ModelSpecError,
    parse_spec,
    parse_specs,
    resolve,
)

HEX = "ab" * 32


def test_a_plain_path_stays_a_path_named_by_its_stem() -> None:
    s = load_settings([], env={"RTC_MODEL": "/m/yolo11s.onnx"})
    assert s.model == Path("/m/yolo11s.onnx")
    assert s.model_specs() == (ModelSpec(name="yolo11s", source="/m/yolo11s.onnx"),)


def test_remote_single_model_with_pinned_hash_and_options() -> None:
    s = load_settings([], env={"RTC_MODEL": f"gs://bucket/dir/yolo11m.onnx#sha256={HEX.upper()}&imgsz=480"})
    (spec,) = s.model_specs()
    assert (spec.name, spec.source, spec.sha256, spec.imgsz) == ("yolo11m", "gs://bucket/dir/yolo11m.onnx", HEX, 480)
    assert spec.remote and spec.scheme == "gs"


def test_several_models_the_first_the_default_replacing_model() -> None:
    s = load_settings(["--models", f"a=models/a.onnx,b=https://h.example/x/b.onnx#sha256={HEX}&letterbox=square"],
                      env={"RTC_MODEL": "/m/ignored.onnx"})
    a, b = s.model_specs()
    assert (a.name, a.source, a.sha256) == ("a", "models/a.onnx", None)
    assert (b.name, b.letterbox, b.display) == ("b", "square", "https://h.example/x/b.onnx")


def test_json_form_takes_sources_literally() -> None:
    specs = parse_specs(f'[{{"name": "odd", "source": "models/we,ird#1.onnx"}},'
                        f' {{"name": "r", "source": "gs://b/o.onnx", "sha256": "{HEX}", "imgsz": 320,'
                        f' "backend": "onnxruntime", "precision": "f32"}}]')
    assert specs[0] == ModelSpec(name="odd", source="models/we,ird#1.onnx")
    assert (specs[1].imgsz, specs[1].backend, specs[1].precision) == (320, "onnxruntime", "f32")


def test_credentials_and_query_stay_out_of_the_display() -> None:
    spec = parse_spec(f"https://user:secret@h.example:8443/m.onnx?X-Goog-Signature=abc#sha256={HEX}")
    assert spec.display == "https://h.example:8443/m.onnx" and spec.file_name == "m.onnx"


@pytest.mark.parametrize(("text", "says"), [
    ("https://h.example/m.onnx", "no pinned sha256"),
    ("gs://bucket/m.onnx", "no pinned sha256"),
    (f"gs://bucket#sha256={HEX}", "gs://BUCKET/OBJECT"),
    (f"s3://bucket/m.onnx#sha256={HEX}", "unsupported source"),
    ("models/m.onnx#sha256=1234", "not 64 hex digits"),
    ("models/m.onnx#imgsz=600", "multiple of 32"),
    ("models/m.onnx#imgsz=big", "not a number"),
    ("models/m.onnx#letterbox=wide", "letterbox"),
    ("models/m.onnx#backend=tensorflow", "backend"),
    ("models/m.onnx#precision=f8", "precision"),
    ("models/m.onnx#colour=red", "unknown option"),
    ("models/m.onnx#imgsz=320&imgsz=640", "given twice"),
    ("models/m.onnx#imgsz", "key=value"),
])
def test_bad_specs_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ModelSpecError, match=says):
        parse_spec(text)
    with pytest.raises(ConfigError, match=says):  # the server: exit 2, before loading anything
        load_settings([], env={"RTC_MODEL": text})


@pytest.mark.parametrize(("text", "says"), [
    ("a=x.onnx,a=y.onnx", "names a more than once"),
    ("x.onnx", "NAME=SOURCE"),
    ("bad name=x.onnx", "NAME=SOURCE"),
    ("[1, 2]", "list of objects"),
    ('[{"name": "a"}]', "'source'"),
    ('[{"name": "a", "source": "x.onnx", "size": 3}]', "unknown field"),
    ("[", "not valid JSON"),
])
def test_bad_model_lists_are_refused(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings([], env={"RTC_MODELS": text})


def test_a_local_file_may_pin_its_hash(model_file: Path, tmp_path: Path) -> None:
    from rtc_server.engine.artifacts import sha256_of

    good = parse_spec(f"{model_file}#sha256={sha256_of(model_file)}")
    assert resolve(good, tmp_path) == model_file
    with pytest.raises(ModelSourceError, match="not the pinned"):
        resolve(parse_spec(f"{model_file}#sha256={HEX}"), tmp_path)


def test_a_spec_names_its_backend_and_precision(model_file: Path) -> None:
    """A model's own ``backend=``/``precision=`` win over the server's; one that cannot run as
    asked is refused at load, never run otherwise (the process exits 1 with this)."""
    catalog = load_models(Settings(models=parse_specs(f"m={model_file}#backend=openvino&precision=f32,"
                                                      f"n={model_file}#backend=onnxruntime")))
    assert (catalog.info("m").backend, catalog.info("m").precision) == ("openvino", "f32")
    assert (catalog.info("n").backend, catalog.info("n").precision) == ("onnxruntime", "f32")
    with pytest.raises(ModelError, match="onnxruntime runs this model in its own precision"):
        load_models(Settings(models=parse_specs(f"m={model_file}#backend=onnxruntime&precision=bf16")))
