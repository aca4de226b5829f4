"""Inference backends: selection and start-up errors, ONNX export and cache, the TensorRT export
graph and engine cache keys, CUDA fixed-shape logic, GPU nearest neighbours, numerics of every
available backend against PyTorch fp32, and localization with ONNX Runtime.

Tests that need a GPU (cuda, tensorrt) skip without one; their CPU-side parts are tested here.
"""

import logging

import cv2
import numpy as np
import pytest
import skimage.data
import torch

import vloc_ros.backends as backends
from vloc_ros.backends import BackendUnavailableError, onnx_backend, select_backend, tensorrt_backend
from vloc_ros.backends.cuda_backend import CudaBackbone
from vloc_ros.backends.nearest_neighbours import TorchNearestNeighbours, gpu_nearest_neighbours, torch_top_k
from vloc_ros.features import create_extractor
from vloc_ros.features.xfeat import load_xfeat_backbone

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and CUDA PyTorch")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One thread for torch (and so for ONNX Runtime's default): faster on 2 shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backend_cache")


@pytest.fixture(scope="module")
def model():
    return load_xfeat_backbone()


@pytest.fixture(scope="module")
def photos():
    """Real photos shipped with scikit-image, at the real-time input size."""
    return [
        cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)
        for image in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.stereo_motorcycle()[0])
    ]


@pytest.fixture(scope="module")
def reference(photos):
    extractor = create_extractor({"name": "xfeat", "backend": "torch_cpu"})
    return extractor, [extractor.extract(image) for image in photos]


# --- selection and start-up errors ---------------------------------------------------------------


def test_auto_picks_the_best_available_and_logs_why(monkeypatch, caplog):
    missing = {"tensorrt": ("no TensorRT here", "get it"), "cuda": ("no GPU here", "get one")}
    monkeypatch.setattr(backends, "unavailable_reason", lambda backend: missing.get(backend))
    with caplog.at_level(logging.INFO, logger="vloc_ros.backends"):
        assert select_backend("auto") == "onnxruntime"
    assert "auto -> onnxruntime" in caplog.text and "no GPU here" in caplog.text

    missing["onnxruntime"] = ("not installed", "pip install onnxruntime")
    assert select_backend("auto") == "torch_cpu"
    assert select_backend("torch_cpu") == "torch_cpu"


@pytest.mark.parametrize(
    "missing, expected",
    [
        (set(), "tensorrt"),
        ({"tensorrt"}, "cuda"),
        ({"cuda"}, "tensorrt"),  # the order decides, not the first gap
        ({"tensorrt", "cuda"}, "onnxruntime"),
        ({"tensorrt", "onnxruntime"}, "cuda"),
        ({"tensorrt", "cuda", "onnxruntime"}, "torch_cpu"),
    ],
)
def test_auto_follows_the_preference_order_given_an_availability_table(monkeypatch, missing, expected):
    monkeypatch.setattr(
        backends, "unavailable_reason", lambda backend: ("missing", "get it") if backend in missing else None
    )
    assert select_backend("auto") == expected
    for backend in missing:
        with pytest.raises(BackendUnavailableError):
            select_backend(backend)


def test_auto_on_this_machine():
    if not torch.cuda.is_available():
        expected = "onnxruntime"  # onnxruntime is a dependency of the package: installed here
    else:
        try:
            import torch_tensorrt  # noqa: F401

            expected = "tensorrt"
        except Exception:  # noqa: BLE001 - ImportError, or OSError for missing TensorRT libraries
            expected = "cuda"
    assert select_backend("auto") == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where there is no GPU")
@pytest.mark.parametrize("backend", ["tensorrt", "cuda"])
def test_gpu_backend_without_a_gpu_is_a_clear_error_at_start_up(backend):
    with pytest.raises(BackendUnavailableError, match=f"'{backend}' is not available: .*CUDA") as error:
        create_extractor({"name": "xfeat", "backend": backend})
    assert error.value.backend == backend and "onnxruntime" in error.value.remedy


def test_missing_onnxruntime_is_a_clear_error(monkeypatch):
    find_spec = backends.importlib.util.find_spec
    monkeypatch.setattr(
        backends.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args),
    )
    with pytest.raises(BackendUnavailableError, match="onnxruntime package is not installed.*pip install onnxruntime"):
        create_extractor({"name": "xfeat", "backend": "onnxruntime"})


@pytest.mark.parametrize(
    "config, message",
    [
        ({"backend": "tpu"}, "unknown backend 'tpu'"),
        ({"backend": "torch_cpu", "backend_options": {"thread": 2}}, "unknown BackendOptions key"),
        ({"backend_options": {"thread": 2}}, "unknown BackendOptions key"),  # checked without a backend too
        ({"backend": "torch_cpu", "backend_options": {"precision": "int8"}}, "unknown precision"),
        ({"backend": "onnxruntime", "backend_options": {"opset": 13}}, "opset must be 17"),
        ({"name": "aliked", "backend": "onnxruntime"}, "is for XFeat"),
    ],
)
def test_bad_backend_config_raises_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        create_extractor({"name": "xfeat", **config})


def test_aliked_runs_under_the_localizers_default_backend():
    """The localizer asks for ``backend: auto``; the query extractor of an ALIKED map takes it (PyTorch)."""
    assert create_extractor({"name": "aliked", "backend": "auto"}).name == "aliked"


def test_backend_stays_out_of_the_map_contract(reference, cache_dir):
    torch_extractor = reference[0]
    onnx_extractor = create_extractor(
        {"name": "xfeat", "backend": "onnxruntime", "backend_options": {"cache_dir": cache_dir}}
    )
    assert onnx_extractor.backend == "onnxruntime" and torch_extractor.backend == "torch_cpu"
    assert create_extractor({"name": "xfeat"}).backend == "torch_cpu"  # no backend: PyTorch on the given device
    for attribute in ("config", "name", "weights_sha256", "descriptor_dim"):
        assert getattr(onnx_extractor, attribute) == getattr(torch_extractor, attribute)
    assert "backend" not in onnx_extractor.config


# --- ONNX export and cache ---------------------------------------------------------------------------


def test_onnx_export_has_dynamic_batch_and_size_and_matches_torch(model, tmp_path):
    import onnx

    path = tmp_path / "xfeat.onnx"
    onnx_backend.export_onnx(model, path, opset=18, exporter="torchscript")
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 18
    input_dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in input_dims] == ["batch", 1, "height", "width"]
    backbone = onnx_backend.OnnxRuntimeBackbone(path, threads=1)
    for shape in [(1, 1, 480, 640), (2, 1, 96, 160)]:
        images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = model(images)
        for output, reference_output in zip(backbone(images), expected):
            assert output.shape == reference_output.shape
            torch.testing.assert_close(output, reference_output, atol=1e-4 * reference_output.abs().max(), rtol=0)


def test_dynamo_exporter_when_onnxscript_is_installed(model, tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript (not in requirements)")
    path = tmp_path / "xfeat.onnx"
    onnx_backend.export_onnx(model, path, opset=18, exporter="dynamo")
    images = torch.rand(2, 1, 224, 320)  # batch, height and width all differ from the export example
    with torch.inference_mode():
        for output, expected in zip(onnx_backend.OnnxRuntimeBackbone(path, threads=1)(images), model(images)):
            torch.testing.assert_close(output, expected, atol=1e-4 * expected.abs().max(), rtol=0)


def test_onnx_model_is_exported_once_then_read_from_the_cache(model, tmp_path, monkeypatch):
    exports = []

    def fake_export(model, path, opset, exporter):
        exports.append(exporter)
        if exporter == "dynamo":
            raise ImportError("no onnxscript")
        path.write_bytes(b"onnx")

    monkeypatch.setattr(onnx_backend, "export_onnx", fake_export)
    path = onnx_backend.ensure_onnx_model(model, "xfeat", "ab" * 32, 18, tmp_path)
    assert exports == ["dynamo", "torchscript"]  # dynamo failed: fell back
    assert path.name.startswith("xfeat-onnx-opset18-torchscript-") and path.read_bytes() == b"onnx"
    assert '"exporter": "torchscript"' in path.with_name(path.name + ".json").read_text()
    assert onnx_backend.ensure_onnx_model(model, "xfeat", "ab" * 32, 18, tmp_path) == path
    assert len(exports) == 2  # the second start exported nothing
    assert onnx_backend.ensure_onnx_model(model, "xfeat", "cd" * 32, 18, tmp_path) != path  # new weights
    assert onnx_backend.ensure_onnx_model(model, "xfeat", "ab" * 32, 19, tmp_path) != path  # new opset
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_every_exporter_failing_names_each_failure(model, tmp_path, monkeypatch):
    def failing_export(model, path, opset, exporter):
        raise RuntimeError(f"{exporter} broke")

    monkeypatch.setattr(onnx_backend, "export_onnx", failing_export)
    with pytest.raises(RuntimeError, match="dynamo: RuntimeError: dynamo broke; torchscript: RuntimeError: torch"):
        onnx_backend.ensure_onnx_model(model, "xfeat", "ab" * 32, 18, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_vloc_export_onnxruntime_writes_the_file_the_extractor_reads(cache_dir, capsys):
    from vloc_ros.cli import main

    assert main(["export", "--backend", "onnxruntime", "--output", str(cache_dir)]) == 0
    printed = capsys.readouterr().out.strip()
    extractor = create_extractor(
        {"name": "xfeat", "backend": "onnxruntime", "backend_options": {"cache_dir": cache_dir}}
    )
    assert printed == str(extractor.backbone.exported_path) and extractor.backbone.exported_path.is_file()
    if not torch.cuda.is_available():
        assert main(["export", "--backend", "tensorrt", "--width", "640", "--height", "480"]) == 2
        assert "'tensorrt' is not available" in capsys.readouterr().err
    assert main(["export", "--backend", "tensorrt"]) == 2
    assert "needs --width and --height" in capsys.readouterr().err


# --- TensorRT: everything up to the compile call ----------------------------------------------------


def test_tensorrt_export_program_is_the_backbone_at_a_static_shape(model):
    program = tensorrt_backend.export_program(model, (1, 1, 480, 640))
    images = torch.rand(1, 1, 480, 640, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        outputs, expected = program.module()(images), model(images)
    assert [tuple(o.shape) for o in outputs] == [(1, 64, 60, 80), (1, 65, 60, 80), (1, 1, 60, 80)]
    for output, reference_output in zip(outputs, expected):
        torch.testing.assert_close(output, reference_output, atol=1e-5 * reference_output.abs().max(), rtol=0)
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "x")
    assert tuple(placeholder.meta["val"].shape) == (1, 1, 480, 640)  # static: TensorRT builds for this shape


ENGINE_FIELDS = dict(
    model_name="xfeat",
    weights_sha256="ab" * 32,
    input_shape=(1, 1, 480, 640),
    precision="fp16",
    environment={"tensorrt": "10.3.0", "torch_tensorrt": "2.5.0", "gpu": "Orin"},
)


@pytest.mark.parametrize(
    "change",
    [
        {"weights_sha256": "cd" * 32},
        {"input_shape": (1, 1, 384, 512)},
        {"precision": "fp32"},
        {"environment": {**ENGINE_FIELDS["environment"], "tensorrt": "10.4.0"}},
        {"environment": {**ENGINE_FIELDS["environment"], "gpu": "NVIDIA H100 80GB HBM3"}},
    ],
)
def test_engine_cache_key_changes_with_each_field(change, tmp_path):
    path = tensorrt_backend.engine_path(tmp_path, tensorrt_backend.engine_fields(**ENGINE_FIELDS))
    assert path.parent == tmp_path and path.name.startswith("xfeat-tensorrt-640x480-fp16-") and path.suffix == ".ep"
    assert tensorrt_backend.engine_path(tmp_path, tensorrt_backend.engine_fields(**ENGINE_FIELDS)) == path
    changed = tensorrt_backend.engine_path(tmp_path, tensorrt_backend.engine_fields(**{**ENGINE_FIELDS, **change}))
    assert changed != path


def test_engine_is_built_once_per_machine_then_loaded_from_the_cache(model, tmp_path, monkeypatch):
    environment = dict(ENGINE_FIELDS["environment"])
    builds = []
    monkeypatch.setattr(tensorrt_backend, "tensorrt_environment", lambda: dict(environment))
    monkeypatch.setattr(
        tensorrt_backend, "build_engine", lambda model, shape, path: (builds.append(shape), path.write_bytes(b"engine"))
    )
    first = tensorrt_backend.ensure_engine(model, "xfeat", "ab" * 32, (1, 1, 480, 640), "fp16", tmp_path)
    again = tensorrt_backend.ensure_engine(model, "xfeat", "ab" * 32, (1, 1, 480, 640), "fp16", tmp_path)
    assert first == again and builds == [(1, 1, 480, 640)]
    assert '"gpu": "Orin"' in first.with_name(first.name + ".json").read_text()
    environment["gpu"] = "NVIDIA H100 80GB HBM3"  # the same cache on another GPU: another engine
    assert tensorrt_backend.ensure_engine(model, "xfeat", "ab" * 32, (1, 1, 480, 640), "fp16", tmp_path) != first
    assert len(builds) == 2


def test_precision_settings_follow_the_torch_tensorrt_api():
    def explicit_typing_compile(program, inputs, use_explicit_typing=True): ...

    def old_compile(program, inputs, enabled_precisions=frozenset()): ...

    assert tensorrt_backend.precision_settings(explicit_typing_compile, torch.float16) == {}
    assert tensorrt_backend.precision_settings(old_compile, torch.float16) == {"enabled_precisions": {torch.float16}}


# --- CUDA backbone: fixed shape and fallback -----------------------------------------------------------


def test_fixed_shape_runs_the_prepared_path_and_other_shapes_run_eagerly(model, caplog):
    prepared = []

    class RecordingBackbone(CudaBackbone):
        def fixed_shape_runner(self, example):
            prepared.append(tuple(example.shape))
            return lambda images: tuple(output + 0 for output in self.model(images))

    backbone = RecordingBackbone(load_xfeat_backbone(), "fp32", cuda_graph=False, device="cpu")
    backbone.prepare((1, 1, 64, 96))
    images = torch.rand(1, 1, 64, 96)
    with caplog.at_level(logging.WARNING):
        backbone(images)
        other = [backbone(torch.rand(1, 1, 96, 64)) for _ in range(2)]
    assert prepared == [(1, 1, 64, 96)]
    assert caplog.text.count("running it eagerly") == 1  # warned once per shape, not per frame
    assert other[0][0].shape == (1, 64, 12, 8)


@requires_cuda
def test_cuda_graph_replay_equals_eager_fp16(model):
    images = torch.rand(1, 1, 480, 640, device="cuda")
    graph = CudaBackbone(load_xfeat_backbone(), "fp16", cuda_graph=True)
    eager = CudaBackbone(load_xfeat_backbone(), "fp16", cuda_graph=False)
    for _ in range(2):  # the first call captures, the second replays
        for output, expected in zip(graph(images), eager(images)):
            torch.testing.assert_close(output.float(), expected.float(), atol=1e-2, rtol=1e-2)
    kept = graph(images)[0]
    snapshot = kept.clone()
    graph(torch.rand(1, 1, 480, 640, device="cuda"))
    assert torch.equal(kept, snapshot)  # outputs are copies: the next replay does not overwrite them


# --- numerics of every available backend against PyTorch fp32 ------------------------------------

# backend, options, tolerances on descriptors (unit vectors) and on scores (relative to the highest).
# fp16 scores: in fp16 the network's keypoint logits (magnitude up to ~25) come out within ~0.2, which the
# softmax turns into score errors of 1.4 % (astronaut photo, CPU fp16) to 2.0 % (H100) of the highest score.
NUMERICS_CASES = [
    ("onnxruntime", {}, 1e-4, 1e-4),
    ("cuda", {"precision": "fp16"}, 1e-2, 3e-2),
    ("tensorrt", {"precision": "fp16"}, 1e-2, 3e-2),
]


def match_identical_keypoints(reference, candidate):
    """Index pairs of keypoints at exactly the same position (order may differ on near-tied scores)."""
    position = {tuple(k): i for i, k in enumerate(candidate.keypoints.tolist())}
    pairs = [(i, position[k]) for i, k in enumerate(map(tuple, reference.keypoints.tolist())) if k in position]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@pytest.mark.parametrize(
    "backend, options, descriptor_tolerance, score_tolerance", NUMERICS_CASES, ids=[c[0] for c in NUMERICS_CASES]
)
def test_backend_features_match_the_torch_fp32_reference(
    backend, options, descriptor_tolerance, score_tolerance, reference, photos, cache_dir
):
    reason = backends.unavailable_reason(backend)
    if reason:
        pytest.skip(f"{backend}: {reason[0]}")
    extractor = create_extractor(
        {
            "name": "xfeat",
            "backend": backend,
            "backend_options": {**options, "cache_dir": cache_dir, "image_size": (640, 480)},
        }
    )
    for image, expected in zip(photos, reference[1]):
        features = extractor.extract(image)
        pairs = match_identical_keypoints(expected, features)
        assert len(pairs) >= 0.95 * len(expected) and abs(len(features) - len(expected)) <= 0.05 * len(expected)
        descriptor_error = np.abs(expected.descriptors[pairs[:, 0]] - features.descriptors[pairs[:, 1]]).max()
        score_error = np.abs(expected.scores[pairs[:, 0]] - features.scores[pairs[:, 1]]).max() / expected.scores.max()
        errors = (descriptor_error, score_error)
        assert descriptor_error <= descriptor_tolerance and score_error <= score_tolerance, errors


# --- GPU nearest neighbours (the torch path runs on the CPU in fp32 here) ---------------------------


def exact_nearest(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64: (distances, rows) of the k nearest database rows, ascending."""
    queries, database = queries.astype(np.float64), database.astype(np.float64)
    squared = (queries**2).sum(1)[:, None] + (database**2).sum(1)[None] - 2 * queries @ database.T
    rows = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.maximum(np.take_along_axis(squared, rows, 1), 0)), rows


def descriptor_table(size: int, num_queries: int, seed: int = 0, scale_rows: bool = False):
    """(table, queries): unit 64-D rows (or rows of norm 0.5-2), queries near random rows."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(size, 64)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    if scale_rows:
        table *= rng.uniform(0.5, 2.0, (size, 1)).astype(np.float32)
    sources = rng.choice(size, num_queries)
    return table, table[sources] + rng.normal(scale=0.02, size=(num_queries, 64)).astype(np.float32), sources


@pytest.mark.parametrize("scale_rows", [False, True])
def test_torch_nearest_neighbours_equal_an_exact_search(scale_rows):
    database, queries, _ = descriptor_table(5000, 300, scale_rows=scale_rows)
    expected_distances, expected_indices = exact_nearest(queries, database, 5)
    # chunk_size 700 does not divide 5000, nor the CPU's 256-query tiles 300: uneven tiles both ways
    search = TorchNearestNeighbours(database, precision="fp32", device="cpu", use_faiss=False, chunk_size=700)
    distances, indices = search.search(queries, 5)
    assert distances.dtype == np.float32 and indices.dtype == np.int64 and indices.shape == (300, 5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_torch_top_k_with_k_larger_than_a_chunk():
    database = torch.arange(10, dtype=torch.float32)[:, None]  # 1-D points 0..9
    indices = torch_top_k(torch.tensor([[6.2]]), database, 0.5 * database[:, 0] ** 2, k=4, chunk_size=3)
    assert indices.tolist() == [[6, 7, 5, 8]]


def test_knn_subset_equals_an_exact_search_among_those_points():
    table, queries, _ = descriptor_table(5000, 300, scale_rows=True)
    subset = np.random.default_rng(1).choice(5000, 1200, replace=False)  # unsorted, as any caller may pass
    search = TorchNearestNeighbours(table, precision="fp32", device="cpu", use_faiss=False, chunk_size=500)
    distances, ids = search.knn_subset(queries, subset, 8)
    expected_distances, rows = exact_nearest(queries, table[subset], 8)
    assert distances.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (300, 8)
    np.testing.assert_array_equal(ids, subset[rows])
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-4)
    everything = search.knn_subset(queries, np.arange(5000), 5)  # the whole table: the same as search()
    np.testing.assert_array_equal(everything[1], search.search(queries, 5)[1])


def test_knn_subset_pads_with_minus_one_when_fewer_points_than_k():
    table, queries, _ = descriptor_table(100, 4)
    search = TorchNearestNeighbours(table, precision="fp32", device="cpu", use_faiss=False)
    distances, ids = search.knn_subset(queries, np.array([7, 3, 50]), 5)
    assert ids.shape == (4, 5) and np.all(ids[:, 3:] == -1) and np.all(np.isinf(distances[:, 3:]))
    assert all(sorted(row) == [3, 7, 50] for row in ids[:, :3].tolist())
    assert np.all(np.diff(distances[:, :3], axis=1) >= 0)
    distances, ids = search.knn_subset(queries, np.zeros(0, np.int64), 2)  # no keyframe retrieved
    assert ids.shape == (4, 2) and np.all(ids == -1) and np.all(np.isinf(distances))


def test_nearest_neighbour_input_errors():
    search = TorchNearestNeighbours(np.eye(4, dtype=np.float32), precision="fp32", device="cpu", use_faiss=False)
    with pytest.raises(ValueError, match="k must be in 1..4"):
        search.search(np.eye(4), 5)
    with pytest.raises(ValueError, match=r"queries must be \(Q, 4\)"):
        search.search(np.eye(3), 1)
    with pytest.raises(ValueError, match=r"queries must be \(Q, 4\)"):
        search.knn_subset(np.eye(3), [0], 1)
    with pytest.raises(ValueError, match="point_ids must lie in 0..3"):
        search.knn_subset(np.eye(4), [0, 4], 1)
    with pytest.raises(ValueError, match="1-D integer"):
        search.knn_subset(np.eye(4), np.array([[0, 1]]), 1)
    with pytest.raises(ValueError, match="k must be at least 1"):
        search.knn_subset(np.eye(4), [0, 1], 0)
    with pytest.raises(ValueError, match="non-empty"):
        TorchNearestNeighbours(np.zeros((0, 4)), device="cpu")
    # No queries (a frame without keypoints) is not an error: empty answers.
    assert search.search(np.zeros((0, 4)), 2)[1].shape == (0, 2)
    assert search.knn_subset(np.zeros((0, 4)), [0, 1], 2)[1].shape == (0, 2)


@requires_cuda
def test_gpu_nearest_neighbours_fp16_agree_with_fp32():
    database, queries, sources = descriptor_table(100_000, 2048)
    distances, indices = gpu_nearest_neighbours(queries, database, 2)
    exact = TorchNearestNeighbours(database, precision="fp32", use_faiss=False).search(queries, 2)
    assert np.mean(indices[:, 0] == sources) == 1.0
    assert np.mean(indices == exact[1]) >= 0.99
    np.testing.assert_allclose(distances, exact[0], atol=1e-2)


@requires_cuda
def test_gpu_knn_subset_fp16_differs_from_exact_only_on_near_ties():
    table, queries, sources = descriptor_table(100_000, 2048)
    subset = np.unique(np.concatenate([sources, np.random.default_rng(1).choice(100_000, 18_000)]))
    distances, ids = TorchNearestNeighbours(table).knn_subset(queries, subset, 8)
    expected_distances, rows = exact_nearest(queries, table[subset], 8)
    assert np.all(ids[:, 0] == sources)
    # fp16 ranking may swap the 8th and 9th nearest where they are within its rounding; the fp32
    # distances returned show by how much
    assert np.mean(ids == subset[rows]) >= 0.95
    assert np.all(distances >= expected_distances - 1e-5) and np.all(distances <= expected_distances + 2e-3)


# --- end to end ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_localization_with_onnxruntime_matches_torch_cpu(request, cache_dir):
    reason = "needs the whole CPU stack (a GPU machine may carry only the network's packages)"
    localizer = pytest.importorskip("vloc_ros.localizer", reason=reason)
    for module in ("vloc_ros.sim", "vloc_ros.mapping.builder", "pyrender"):
        pytest.importorskip(module, reason=reason)
    # Only now the fixtures: rendering the world and building its map need what was just checked.
    sim_dataset, sim_map = request.getfixturevalue("sim_dataset"), request.getfixturevalue("sim_map")
    from vloc_ros.geometry import pose_error
    from vloc_ros.mapping.map_format import load_map
    from vloc_ros.mapping.sources import load_intrinsics, read_image_rgb
    from vloc_ros.tum import read_tum

    localization_map = load_map(sim_map)
    camera = load_intrinsics(sim_dataset / "camera.yaml")
    _, truth = read_tum(sim_dataset / "query_poses.tum")
    images = [read_image_rgb(p) for p in sorted((sim_dataset / "images" / "query").glob("*.png"))]
    errors = {}
    for backend in ("torch_cpu", "onnxruntime"):
        extractor = create_extractor(
            {
                **localization_map.manifest.extractor.config,
                "backend": backend,
                "backend_options": {"cache_dir": cache_dir},
            }
        )
        run = localizer.Localizer(localization_map, extractor=extractor)
        results = [run.localize(image, camera) for image in images]
        errors[backend] = np.array(
            [pose_error(r.world_from_camera, t) if r.ok else (np.inf, np.inf) for r, t in zip(results, truth)]
        )
    recalls = {b: np.mean((e[:, 0] <= 0.05) & (e[:, 1] <= 1.0)) for b, e in errors.items()}
    print("recall@(5 cm, 1 deg):", recalls)
    assert recalls["torch_cpu"] >= 0.9
    assert abs(recalls["onnxruntime"] - recalls["torch_cpu"]) <= 1 / len(images)
    both = np.isfinite(errors["torch_cpu"][:, 0]) & np.isfinite(errors["onnxruntime"][:, 0])
    assert np.median(errors["onnxruntime"][both, 0]) <= np.median(errors["torch_cpu"][both, 0]) + 0.005
