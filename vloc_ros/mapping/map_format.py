"""The localization map artifact: a directory of ``.npy`` arrays, a COLMAP model and a manifest.

Layout (format version 3, documented in docs/map_format.md)::

    MAP/
      manifest.json        format, version, extractor, descriptor dims, counts, units, build info,
                           sha256 of every other file
      keyframes.json       per keyframe: image name, camera, world_from_camera
      arrays/NAME.npy      per-point and per-keyframe arrays (ARRAY_SPECS)
      state/COMPONENT/KEY.npy   learned components (binarizer, local index, global descriptor), each
                           of the kind the manifest names (binarizer.method, global_descriptor.name,
                           local_index.type)
      sparse/              the COLMAP model the map was built from

Writing goes to a sibling temp directory that is renamed into place, so a map directory is
either complete or absent. Loading checks the format version, reads the manifest into a
``MapManifest`` (its dataclasses are the manifest's schema) and checks every checksum before numpy
reads anything, reads only the files the manifest lists, then checks the arrays (ARRAY_SPECS), the
learned components' states (BINARIZER_STATES, GLOBAL_DESCRIPTOR_STATES, LOCAL_INDEX_STATES) and that
the manifest describes those arrays: a damaged map is a ``MapError`` with a message a user can act
on, never an error inside the localizer.

Large arrays are memory-mapped read-only by default (``load_map(mmap=True)``): a map of millions of
points then loads in the time its checksums take, and the arrays that are only ever read in parts
(the observations, most of a map's bytes, and the points the localizer gathers by id) stay file pages
that the kernel shares with the page cache the checksums filled and may drop under memory pressure,
instead of a private copy. The checksums are still verified first, over the same files; a change to
a file after that is as unchecked as it is for an eager load.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from ..atomic import atomic_directory
from ..config import to_dict
from ..geometry import Camera, Rigid3
from ..hashing import file_sha256

FORMAT_NAME = "vloc_ros-map"
FORMAT_VERSION = 3
# Version 3 adds learned codes and a learned global descriptor (binarizer.method "learned",
# global_descriptor.name "netvlad"). A version 2 map is a version 3 map with neither, so it still loads.
READABLE_FORMAT_VERSIONS = (2, 3)

# name -> (dtype, shape with symbolic sizes). P points, K keyframes, D descriptor dim,
# C code bytes, G global descriptor dim, PK/KP lengths of the CSR value arrays, M observations.
ARRAY_SPECS = {
    "points_xyz": ("float64", ("P", 3)),
    "point_descriptors": ("float16", ("P", "D")),
    "point_codes": ("uint8", ("P", "C")),
    "point_keyframes_offsets": ("int64", ("P+1",)),
    "point_keyframes": ("int32", ("PK",)),
    "keyframe_points_offsets": ("int64", ("K+1",)),
    "keyframe_points": ("int32", ("KP",)),
    "keyframe_global_descriptors": ("float32", ("K", "G")),
    # Per keyframe (CSR) its observations of map points: keypoint, descriptor and point id.
    "keyframe_observations_offsets": ("int64", ("K+1",)),
    "observation_keypoints": ("float32", ("M", 2)),
    "observation_descriptors": ("float16", ("M", "D")),
    "observation_points": ("int32", ("M",)),
}

# kind -> key -> (dtype kind, shape): the state arrays that the component's from_state reads, by the
# kind the manifest names. Shape symbols as in ARRAY_SPECS, plus B code bits (8 C); other symbols are
# the component's own (V visual words, N nodes, T trees, L leaves, S leaf size, F serialized bytes,
# R real descriptor dim, E flip-model bins).
_LINEAR_BINARIZER = {"mean": ("f", ("D",)), "rotation": ("f", ("D", "B")), "method": ("U", ())}
BINARIZER_STATES = {
    "pca": _LINEAR_BINARIZER,
    "itq": _LINEAR_BINARIZER,
    "sign": _LINEAR_BINARIZER,
    "learned": {
        "method": ("U", ()),
        "mean": ("f", ("D",)),
        "binary_weights": ("f", ("D", "B")),
        "binary_bias": ("f", ("B",)),
        "real_weights": ("f", ("D", "R")),
        "real_bias": ("f", ("R",)),
        "flip_bin_width": ("f", ("B",)),
        "flip_probability": ("f", ("B", "E")),
    },
}
GLOBAL_DESCRIPTOR_STATES = {
    "vlad": {"centroids": ("f", ("V", "D"))},
    "netvlad": {
        "centroids": ("f", ("V", "D")),
        "assignment_weight": ("f", ("V", "D")),
        "assignment_bias": ("f", ("V",)),
    },
}
# The local index types a map may name (manifest local_index.type) and the state of each.
# search.LOCAL_INDEX_TYPES maps the same names to classes; the names live here so that loading a
# map needs no search code.
LOCAL_INDEX_STATES = {
    "random_trees": {
        "node_bit": ("i", ("N",)),
        "node_child": ("i", ("N",)),
        "tree_roots": ("i", ("T",)),
        "leaf_points": ("i", ("L", "S")),
        "point_codes": ("u", ("P", "C")),
        "depth": ("i", ()),
    },
    "faiss_binary": {"faiss_index": ("u", ("F",))},
}
_KIND_NAMES = {"f": "float", "i": "signed integer", "u": "unsigned integer", "U": "string"}

REBUILD = "rebuild the map with `vloc build-map`"


class MapError(Exception):
    """A map that cannot be used: missing, corrupt, truncated, malformed, or from another format version."""


# manifest.json as builder._assemble writes it. These dataclasses are its schema: load_map requires
# every field, with the JSON type of its annotation (a Literal: one of its values; a nested dataclass:
# an object read the same way), and refuses keys that are no field.


@dataclass(frozen=True)
class ExtractorEntry:
    """The extractor the map's descriptors come from; a query extractor must match it."""

    name: str
    weights_sha256: str
    descriptor_dim: int
    config: dict  # Extractor.config: everything that changes the descriptors


@dataclass(frozen=True)
class GlobalDescriptorEntry:
    name: str
    dim: int
    num_clusters: int
    seed: int


@dataclass(frozen=True)
class BinarizerEntry:
    method: str
    num_bits: int
    seed: int
    code_bytes: int


@dataclass(frozen=True)
class MapCounts:
    keyframes: int
    points: int
    observations: int
    mean_track_length: float
    mean_reprojection_error_px: float
    images_given: int


@dataclass(frozen=True)
class BuildInfo:
    config: dict  # the full BuildConfig
    source: str
    mode: str
    stage_seconds: dict[str, float] = field(default_factory=dict)  # filled once the last stage is timed


@dataclass(frozen=True, kw_only=True)
class MapManifest:
    created: str  # UTC build time
    vloc_ros_version: str
    map_frame: str
    units: Literal["m", "arbitrary"]  # "m" when built from known metric poses
    extractor: ExtractorEntry
    global_descriptor: GlobalDescriptorEntry
    binarizer: BinarizerEntry
    # "type" (a LOCAL_INDEX_STATES name) and that index type's own build parameters
    local_index: dict
    counts: MapCounts
    build: BuildInfo
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256, written by save_map
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION


@dataclass
class Keyframe:
    name: str
    camera: Camera
    world_from_camera: Rigid3


@dataclass
class LocalizationMap:
    manifest: MapManifest
    keyframes: list[Keyframe]
    arrays: dict[str, np.ndarray]
    # component name -> {key: array}; e.g. "binarizer", "local_index", "global_descriptor"
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_points(self) -> int:
        return len(self.arrays["points_xyz"])

    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    @property
    def descriptor_dim(self) -> int:
        return int(self.arrays["point_descriptors"].shape[1])


def _keyframe_to_json(keyframe: Keyframe) -> dict:
    return {
        "name": keyframe.name,
        "camera": keyframe.camera.to_dict(),
        "world_from_camera": keyframe.world_from_camera.to_dict(),
    }


# A keyframes.json entry as _keyframe_to_json writes it, read like the manifest (_entry_from_json).


@dataclass(frozen=True)
class _PoseEntry:
    translation: list
    quaternion_xyzw: list


@dataclass(frozen=True)
class _KeyframeEntry:
    name: str
    camera: dict  # Camera.to_dict()
    world_from_camera: _PoseEntry


def _keyframe_from_json(data, source: str) -> Keyframe:
    entry = _entry_from_json(_KeyframeEntry, data, source)  # checks keys and JSON types
    try:
        return Keyframe(entry.name, Camera.from_dict(entry.camera), Rigid3.from_dict(data["world_from_camera"]))
    except (ValueError, TypeError) as error:
        raise MapError(f"{source} is malformed ({error}); {REBUILD}") from None


def _json_type_name(value) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _where(source: str, prefix: str) -> str:
    """The object at ``prefix`` ("a.b.", or "" for the whole JSON) in ``source``, for a message."""
    return f"{prefix[:-1]} in {source}" if prefix else source


def _check_object(value, source: str, prefix: str) -> None:
    if not isinstance(value, dict):
        raise MapError(f"{_where(source, prefix)} is {_json_type_name(value)}, expected an object; {REBUILD}")


def _check_value(item, expected, source: str, path: str) -> None:
    """Raise MapError unless ``item`` (at ``path`` in ``source``) is of the JSON type ``expected``,
    or one of its values where ``expected`` is a tuple."""
    if isinstance(expected, tuple):
        if item not in expected:
            raise MapError(
                f"{path} in {source} is {item!r}, expected one of {', '.join(map(repr, expected))}; {REBUILD}"
            )
    # JSON true/false parse as bool, a subclass of int; a JSON number may parse as int where float is expected.
    elif isinstance(item, bool) or not isinstance(item, (int, float) if expected is float else expected):
        raise MapError(
            f"{path} in {source} is {_json_type_name(item)}, expected {_json_type_name(expected())}; {REBUILD}"
        )


def _json_expectation(annotation):
    """What _check_value expects of a field annotated ``annotation``: its allowed values or its type."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return typing.get_origin(annotation) or annotation


def _entry_from_json(cls: type, value, source: str, prefix: str = ""):
    """The manifest (or keyframes.json entry) dataclass ``cls`` read from the JSON ``value``; MapError
    naming the first field that ``value`` lacks or holds with another type, or the keys that are no field."""
    _check_object(value, source, prefix)
    annotations = typing.get_type_hints(cls)
    names = [entry.name for entry in dataclasses.fields(cls)]
    fields = {}
    for name in names:
        path = prefix + name
        if name not in value:
            raise MapError(f"{source} lacks {path}; {REBUILD}")
        if dataclasses.is_dataclass(annotations[name]):
            fields[name] = _entry_from_json(annotations[name], value[name], source, path + ".")
        else:
            _check_value(value[name], _json_expectation(annotations[name]), source, path)
            fields[name] = value[name]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise MapError(
            f"{_where(source, prefix)} has unknown key(s) {', '.join(unknown)} (valid: {', '.join(names)}); "
            f"this vloc_ros writes no such key in format version {FORMAT_VERSION}; {REBUILD}"
        )
    return cls(**fields)


def manifest_from_json(data, source: str) -> MapManifest:
    """The MapManifest of the manifest JSON ``data`` read from ``source``; MapError naming the problem."""
    manifest = _entry_from_json(MapManifest, data, source)
    if "type" not in manifest.local_index:
        raise MapError(f"{source} lacks local_index.type; {REBUILD}")
    _check_value(manifest.local_index["type"], tuple(LOCAL_INDEX_STATES), source, "local_index.type")
    _check_value(manifest.binarizer.method, tuple(BINARIZER_STATES), source, "binarizer.method")
    _check_value(manifest.global_descriptor.name, tuple(GLOBAL_DESCRIPTOR_STATES), source, "global_descriptor.name")
    if manifest.format_version < 3 and (
        manifest.binarizer.method == "learned" or manifest.global_descriptor.name != "vlad"
    ):
        raise MapError(
            f"{source} names learned components, which map format version {manifest.format_version} "
            f"does not have; {REBUILD}"
        )
    return manifest


def _check_shape(label: str, array: np.ndarray, shape: tuple, sizes: dict[str, int]) -> None:
    """Raise MapError unless ``array`` has ``shape``. A symbol met for the first time takes its size
    from ``array`` into ``sizes``; "X+1" is one more than X."""
    if array.ndim != len(shape):
        raise MapError(f"{label} has {array.ndim} dimensions, expected {len(shape)}")
    for axis, symbol in enumerate(shape):
        if isinstance(symbol, int):
            expected = symbol
        else:
            symbol, extra = (symbol[:-2], 1) if symbol.endswith("+1") else (symbol, 0)
            expected = sizes.setdefault(symbol, array.shape[axis] - extra) + extra
        if array.shape[axis] != expected:
            raise MapError(f"{label} has shape {array.shape}; axis {axis} should be {expected}")


def validate_arrays(arrays: dict[str, np.ndarray], num_keyframes: int) -> dict[str, int]:
    """Check dtypes, shapes and CSR consistency; raise MapError naming the first problem.

    Returns the sizes of ARRAY_SPECS' symbols (P, K, D, C, G, PK, KP, M)."""
    missing = sorted(set(ARRAY_SPECS) - set(arrays))
    if missing:
        raise MapError(f"map arrays missing: {', '.join(missing)}")
    sizes = {"K": num_keyframes}
    for name, (dtype, shape) in ARRAY_SPECS.items():
        array = arrays[name]
        if array.dtype != np.dtype(dtype):
            raise MapError(f"array {name} has dtype {array.dtype}, expected {dtype}")
        _check_shape(f"array {name}", array, shape, sizes)
    for prefix, values, bound in (
        ("point_keyframes", arrays["point_keyframes"], num_keyframes),
        ("keyframe_points", arrays["keyframe_points"], sizes["P"]),
        ("keyframe_observations", arrays["observation_points"], sizes["P"]),
    ):
        offsets = arrays[prefix + "_offsets"]
        if offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
            raise MapError(f"{prefix}_offsets is not a valid CSR offset array for {len(values)} values")
        if len(values) and (values.min() < 0 or values.max() >= bound):
            raise MapError(f"{prefix} holds ids outside [0, {bound})")
    for name in ("points_xyz", "observation_keypoints"):
        if not np.all(np.isfinite(arrays[name])):
            raise MapError(f"{name} holds non-finite coordinates")
    return sizes


def validate_states(states: dict[str, dict[str, np.ndarray]], manifest: MapManifest, sizes: dict[str, int]) -> None:
    """Check that the components the localizer restores hold the arrays their from_state reads, with
    the dtype kinds and shapes of the kinds the manifest names (``state_specs``); ``sizes`` as
    validate_arrays returns. Raise MapError naming the first problem."""
    for component, spec in state_specs(manifest).items():
        component_sizes = {**sizes, "B": 8 * sizes["C"]}
        for key, (kind, shape) in spec.items():
            label = f"state/{component}/{key}.npy"
            array = states.get(component, {}).get(key)
            if array is None:
                raise MapError(f"{label} is missing")
            if array.dtype.kind != kind:
                raise MapError(f"{label} has dtype {array.dtype}, expected a {_KIND_NAMES[kind]} dtype")
            _check_shape(label, array, shape, component_sizes)
    centroids = states["global_descriptor"]["centroids"]
    if centroids.size != sizes["G"]:
        raise MapError(
            f"state/global_descriptor/centroids.npy has shape {centroids.shape}, which gives "
            f"{centroids.size}-dimensional global descriptors, but the keyframes' have {sizes['G']}"
        )


def _check_manifest_describes_arrays(manifest: MapManifest, sizes: dict[str, int]) -> None:
    """The manifest's sizes must be the arrays' (``sizes``): else it was edited or belongs to another map."""
    described = {
        "counts.keyframes": (manifest.counts.keyframes, sizes["K"]),
        "counts.points": (manifest.counts.points, sizes["P"]),
        "extractor.descriptor_dim": (manifest.extractor.descriptor_dim, sizes["D"]),
        "binarizer.code_bytes": (manifest.binarizer.code_bytes, sizes["C"]),
        "binarizer.num_bits": (manifest.binarizer.num_bits, 8 * sizes["C"]),
        "global_descriptor.dim": (manifest.global_descriptor.dim, sizes["G"]),
    }
    for path, (stated, actual) in described.items():
        if stated != actual:
            raise MapError(f"manifest.json says {path} is {stated}, but the map's arrays have {actual}")


def _validate_contents(
    manifest: MapManifest, num_keyframes: int, arrays: dict[str, np.ndarray], states: dict[str, dict[str, np.ndarray]]
) -> None:
    """The arrays, the states and the manifest's sizes agree (validate_arrays, validate_states,
    _check_manifest_describes_arrays); MapError naming the first problem."""
    sizes = validate_arrays(arrays, num_keyframes)
    if sizes["P"] == 0:
        raise MapError("it has no 3D points")
    validate_states(states, manifest, sizes)
    _check_manifest_describes_arrays(manifest, sizes)


def save_map(localization_map: LocalizationMap, out_dir, overwrite: bool = False, sparse_dir=None) -> Path:
    """Write the map atomically to ``out_dir`` (and copy the COLMAP model in ``sparse_dir`` to ``sparse/``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MapError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    # What load_map checks of the contents: a builder bug must not write a map that loading refuses.
    _validate_contents(
        localization_map.manifest, len(localization_map.keyframes), localization_map.arrays, localization_map.states
    )
    with atomic_directory(out_dir) as tmp:
        (tmp / "arrays").mkdir()
        for name, array in localization_map.arrays.items():
            np.save(tmp / "arrays" / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        for component, state in localization_map.states.items():
            (tmp / "state" / component).mkdir(parents=True)
            for key, array in state.items():
                np.save(tmp / "state" / component / f"{key}.npy", np.asarray(array), allow_pickle=False)
        if sparse_dir:
            shutil.copytree(sparse_dir, tmp / "sparse")
        (tmp / "keyframes.json").write_text(
            json.dumps([_keyframe_to_json(k) for k in localization_map.keyframes], indent=1)
        )
        manifest = dataclasses.replace(
            localization_map.manifest,
            files={str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        )
        (tmp / "manifest.json").write_text(json.dumps(to_dict(manifest), indent=2, sort_keys=True))
    localization_map.manifest, localization_map.path = manifest, out_dir
    return out_dir


def read_manifest(map_dir) -> MapManifest:
    """The manifest of the map at ``map_dir``; MapError unless it is of a format version this reads."""
    map_dir = Path(map_dir)
    manifest_path = map_dir / "manifest.json"
    if not map_dir.is_dir():
        raise MapError(f"no map at {map_dir}: not a directory")
    if not manifest_path.is_file():
        raise MapError(f"{map_dir} is not a vloc_ros map: manifest.json is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MapError(f"{manifest_path} is corrupt: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise MapError(
            f"{map_dir} is not a vloc_ros map (manifest format is {manifest.get('format')!r})"
            if isinstance(manifest, dict)
            else f"{manifest_path} is not a JSON object"
        )
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
        age = "older" if type(version) is int and version < min(READABLE_FORMAT_VERSIONS) else "newer or unknown"
        readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
        raise MapError(
            f"{map_dir} has map format version {version} ({age}); this vloc_ros reads versions "
            f"{readable}. Rebuild the map with `vloc build-map`."
        )
    return manifest_from_json(manifest, str(manifest_path))


def state_specs(manifest: MapManifest) -> dict[str, dict[str, tuple]]:
    """component -> the state spec of the kind ``manifest`` names for it."""
    return {
        "binarizer": BINARIZER_STATES[manifest.binarizer.method],
        "global_descriptor": GLOBAL_DESCRIPTOR_STATES[manifest.global_descriptor.name],
        "local_index": LOCAL_INDEX_STATES[manifest.local_index["type"]],
    }


def _read_keyframes(map_dir: Path) -> list[Keyframe]:
    path = map_dir / "keyframes.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MapError(f"{path} is unreadable ({error}); {REBUILD}") from None
    if not isinstance(entries, list) or not entries:
        raise MapError(
            f"{path} holds {_json_type_name(entries)}{' (empty)' if entries == [] else ''}, "
            f"expected a list of keyframes; {REBUILD}"
        )
    return [_keyframe_from_json(entry, f"{path} entry {index}") for index, entry in enumerate(entries)]


# Files at least this large are memory-mapped by load_map(mmap=True); smaller ones are read: a mapping
# costs a file descriptor's worth of kernel state and a page per array, which only pays for large arrays.
MMAP_MIN_BYTES = 1 << 20


def _load_array(map_dir: Path, relative: str, mmap: bool) -> np.ndarray:
    path = map_dir / relative
    try:
        if mmap and path.stat().st_size >= MMAP_MIN_BYTES:
            # Read-only: a map is never written in place (an update writes a new map), and a write
            # through a shared mapping would change the file under its checksum. Returned as a plain
            # ndarray view of the np.memmap (which it keeps open), so that what is computed from it
            # is an ordinary array, not a memmap without a file.
            return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise MapError(f"map file {relative} in {map_dir} is not a readable .npy array ({error}); {REBUILD}") from None


def load_map(map_dir, verify_checksums: bool = True, mmap: bool = True) -> LocalizationMap:
    """Load and validate a map; every failure is a MapError with the reason.

    ``mmap``: memory-map (read-only) the array files of at least MMAP_MIN_BYTES instead of reading
    them into memory; their arrays are then read-only views of the files. The arrays that
    the search converts anyway (point descriptors to float32, codes to words, the trees' nodes) gain
    nothing, the ones used in place (observations, points, the CSR tables) load without a copy."""
    map_dir = Path(map_dir)
    manifest = read_manifest(map_dir)
    files = manifest.files
    if not files:
        raise MapError(f"{map_dir}/manifest.json lists no files; {REBUILD}")
    for relative, digest in files.items():
        path = PurePosixPath(relative)
        if not isinstance(digest, str) or path.is_absolute() or ".." in path.parts:
            raise MapError(
                f"files in {map_dir}/manifest.json has the entry {relative!r}: {digest!r}, expected a "
                f"path inside the map and its sha256; {REBUILD}"
            )
    required = [
        "keyframes.json",
        *(f"arrays/{name}.npy" for name in ARRAY_SPECS),
        *(f"state/{component}/{key}.npy" for component, spec in state_specs(manifest).items() for key in spec),
    ]
    unlisted = [relative for relative in required if relative not in files]
    if unlisted:
        raise MapError(
            f"the map at {map_dir} is incomplete: manifest.json does not list {', '.join(unlisted)}; {REBUILD}"
        )
    for relative, digest in files.items():
        path = map_dir / relative
        if not path.is_file():
            raise MapError(f"map file {relative} is missing from {map_dir}; {REBUILD}")
        if verify_checksums and file_sha256(path) != digest:
            raise MapError(f"map file {relative} in {map_dir} is corrupt or truncated (checksum mismatch); {REBUILD}")
    keyframes = _read_keyframes(map_dir)
    # Only the listed (checksummed) files: a stray file in the directory is not part of the map.
    arrays: dict[str, np.ndarray] = {}
    states: dict[str, dict[str, np.ndarray]] = {}
    for relative in sorted(files):
        path = PurePosixPath(relative)
        if path.suffix == ".npy" and len(path.parts) == 2 and path.parts[0] == "arrays":
            arrays[path.stem] = _load_array(map_dir, relative, mmap)
        elif path.suffix == ".npy" and len(path.parts) == 3 and path.parts[0] == "state":
            states.setdefault(path.parts[1], {})[path.stem] = _load_array(map_dir, relative, mmap)
    try:
        _validate_contents(manifest, len(keyframes), arrays, states)
    except MapError as error:
        raise MapError(f"the map at {map_dir} is damaged: {error}; {REBUILD}") from None
    return LocalizationMap(manifest, keyframes, arrays, states, map_dir)
