"""The localization map artifact: a directory of ``.npy`` arrays, a COLMAP model and a manifest.

Layout (format version 1, documented in docs/map_format.md)::

    MAP/
      manifest.json        format, version, extractor, descriptor dims, counts, units, build info,
                           sha256 of every other file
      keyframes.json       per keyframe: image name, camera, world_from_camera
      arrays/NAME.npy      per-point and per-keyframe arrays (ARRAY_SPECS)
      state/COMPONENT/KEY.npy   learned components (binarizer, local index, global descriptor)
      sparse/              the COLMAP model the map was built from

Writing goes to a sibling temp directory that is renamed into place, so a map directory is
either complete or absent. Loading checks the format version and every checksum before numpy
reads anything, and raises ``MapError`` with a message a user can act on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry import Camera, Rigid3
from ..hashing import file_sha256

FORMAT_NAME = "vloc_ros-map"
FORMAT_VERSION = 1

# name -> (dtype, shape with symbolic sizes). P points, K keyframes, D descriptor dim,
# C code bytes, G global descriptor dim, PK/KP lengths of the CSR value arrays.
ARRAY_SPECS = {
    "points_xyz": ("float64", ("P", 3)),
    "point_descriptors": ("float16", ("P", "D")),
    "point_codes": ("uint8", ("P", "C")),
    "point_keyframes_offsets": ("int64", ("P+1",)),
    "point_keyframes": ("int32", ("PK",)),
    "keyframe_points_offsets": ("int64", ("K+1",)),
    "keyframe_points": ("int32", ("KP",)),
    "keyframe_global_descriptors": ("float32", ("K", "G")),
}


class MapError(Exception):
    """A map that cannot be used: missing, corrupt, truncated, or from another format version."""


@dataclass
class Keyframe:
    name: str
    camera: Camera
    world_from_camera: Rigid3


@dataclass
class LocalizationMap:
    manifest: dict
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

    def keyframe_point_ids(self, keyframe_index: int) -> np.ndarray:
        offsets = self.arrays["keyframe_points_offsets"]
        return self.arrays["keyframe_points"][offsets[keyframe_index]:offsets[keyframe_index + 1]]


def _keyframe_to_json(keyframe: Keyframe) -> dict:
    pose = keyframe.world_from_camera
    return {"name": keyframe.name, "camera": keyframe.camera.to_dict(),
            "world_from_camera": {"translation": pose.translation.tolist(),
                                  "quaternion_xyzw": pose.quaternion_xyzw.tolist()}}


def _keyframe_from_json(data: dict) -> Keyframe:
    pose = data["world_from_camera"]
    return Keyframe(data["name"], Camera.from_dict(data["camera"]),
                    Rigid3.from_quaternion(pose["quaternion_xyzw"], pose["translation"]))


def validate_arrays(arrays: dict[str, np.ndarray], num_keyframes: int) -> None:
    """Check dtypes, shapes and CSR consistency; raise MapError naming the first problem."""
    missing = sorted(set(ARRAY_SPECS) - set(arrays))
    if missing:
        raise MapError(f"map arrays missing: {', '.join(missing)}")
    sizes = {"K": num_keyframes, "K+1": num_keyframes + 1}
    for name, (dtype, shape) in ARRAY_SPECS.items():
        array = arrays[name]
        if array.dtype != np.dtype(dtype):
            raise MapError(f"array {name} has dtype {array.dtype}, expected {dtype}")
        if array.ndim != len(shape):
            raise MapError(f"array {name} has {array.ndim} dimensions, expected {len(shape)}")
        for axis, symbol in enumerate(shape):
            if isinstance(symbol, int):
                expected = symbol
            else:
                if symbol == "P+1":
                    symbol, extra = "P", 1
                else:
                    extra = 0
                expected = sizes.setdefault(symbol, array.shape[axis] - extra) + extra
            if array.shape[axis] != expected:
                raise MapError(f"array {name} has shape {array.shape}; axis {axis} should be {expected}")
    for prefix, values, bound in (("point_keyframes", arrays["point_keyframes"], num_keyframes),
                                  ("keyframe_points", arrays["keyframe_points"], sizes["P"])):
        offsets = arrays[prefix + "_offsets"]
        if offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
            raise MapError(f"{prefix}_offsets is not a valid CSR offset array for {len(values)} values")
        if len(values) and (values.min() < 0 or values.max() >= bound):
            raise MapError(f"{prefix} holds ids outside [0, {bound})")
    if not np.all(np.isfinite(arrays["points_xyz"])):
        raise MapError("points_xyz holds non-finite coordinates")


def save_map(localization_map: LocalizationMap, out_dir, overwrite: bool = False) -> Path:
    """Write the map atomically to ``out_dir`` (and copy the COLMAP model from ``sparse_dir``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MapError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    validate_arrays(localization_map.arrays, len(localization_map.keyframes))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "arrays").mkdir()
        for name, array in localization_map.arrays.items():
            np.save(tmp / "arrays" / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        for component, state in localization_map.states.items():
            (tmp / "state" / component).mkdir(parents=True)
            for key, array in state.items():
                np.save(tmp / "state" / component / f"{key}.npy", np.asarray(array), allow_pickle=False)
        sparse_source = localization_map.manifest.get("build", {}).get("sparse_dir")
        if sparse_source:
            shutil.copytree(sparse_source, tmp / "sparse")
        (tmp / "keyframes.json").write_text(
            json.dumps([_keyframe_to_json(k) for k in localization_map.keyframes], indent=1))
        manifest = dict(localization_map.manifest)
        manifest["format"], manifest["format_version"] = FORMAT_NAME, FORMAT_VERSION
        manifest.get("build", {}).pop("sparse_dir", None)
        manifest["files"] = {str(p.relative_to(tmp)): file_sha256(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    localization_map.manifest, localization_map.path = manifest, out_dir
    return out_dir


def read_manifest(map_dir) -> dict:
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
        raise MapError(f"{map_dir} is not a vloc_ros map (manifest format is {manifest.get('format')!r})"
                       if isinstance(manifest, dict) else f"{manifest_path} is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        age = "older" if isinstance(version, int) and version < FORMAT_VERSION else "newer or unknown"
        raise MapError(f"{map_dir} has map format version {version} ({age}); this vloc_ros reads version "
                       f"{FORMAT_VERSION}. Rebuild the map with `vloc build-map`.")
    return manifest


def load_map(map_dir, verify_checksums: bool = True) -> LocalizationMap:
    """Load and validate a map; every failure is a MapError with the reason."""
    map_dir = Path(map_dir)
    manifest = read_manifest(map_dir)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise MapError(f"{map_dir}/manifest.json lists no files")
    for relative, digest in files.items():
        path = map_dir / relative
        if not path.is_file():
            raise MapError(f"map file {relative} is missing from {map_dir}")
        if verify_checksums and file_sha256(path) != digest:
            raise MapError(f"map file {relative} in {map_dir} is corrupt or truncated (checksum mismatch)")
    try:
        keyframes = [_keyframe_from_json(k) for k in json.loads((map_dir / "keyframes.json").read_text())]
        arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted((map_dir / "arrays").glob("*.npy"))}
        states: dict[str, dict[str, np.ndarray]] = {}
        for path in sorted((map_dir / "state").glob("*/*.npy")):
            states.setdefault(path.parent.name, {})[path.stem] = np.load(path, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise MapError(f"cannot read map {map_dir}: {error}") from None
    validate_arrays(arrays, len(keyframes))
    return LocalizationMap(manifest, keyframes, arrays, states, map_dir)
