"""Geometry with pycolmap: database import, geometric verification, then either incremental
mapping (unknown poses; known intrinsics held fixed) or triangulation from known poses; either one
continues a map's model, its frames held fixed, when a map is updated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..geometry import Camera, Rigid3


@dataclass(frozen=True)
class ColmapImage:
    """An image as the database and the reconstruction know it. Rig ids are camera ids and frame ids
    image ids (one trivial rig per camera, one frame per image), in a full build and an update alike."""

    image_id: int
    name: str
    camera_id: int
    keypoints: np.ndarray  # (N, 2) pixels, OpenCV centres; indexed as the image's points2D
    world_from_camera: Rigid3 | None = None


def world_from_camera(image) -> Rigid3:
    """The pose of a posed pycolmap ``Image`` as ``world_from_camera`` (COLMAP stores cam_from_world)."""
    pose = image.cam_from_world()
    return Rigid3(pose.rotation.matrix(), pose.translation).inverse()


def quiet_pycolmap() -> None:
    """pycolmap logs every step through glog. Its warnings here are about the image files it looks
    for to colour points, which a build from cached features (or a bag) deliberately never writes."""
    import pycolmap

    pycolmap.logging.minloglevel = pycolmap.logging.ERROR


def assign_camera_ids(cameras: list[Camera], known: dict[int, Camera]) -> tuple[dict[int, Camera], list[int]]:
    """Per frame the id of its camera: a ``known`` camera's where it is one, else a new id after them.

    Returns every camera by id (``known`` and the new ones) and the ids per frame."""
    by_id = dict(known)
    ids = []
    for camera in cameras:
        camera_id = next((i for i, c in by_id.items() if c == camera), None)
        if camera_id is None:
            camera_id = max(by_id, default=0) + 1
            by_id[camera_id] = camera
        ids.append(camera_id)
    return by_id, ids


def write_database(
    path: Path,
    cameras: dict[int, Camera],
    images: list[ColmapImage],
    matches: dict[tuple[int, int], np.ndarray],
    verified: dict[tuple[int, int], np.ndarray] | None = None,
) -> None:
    """A COLMAP database of ``cameras`` (by id), ``images`` and ``matches`` keyed by image id pairs.

    ``verified``: correspondences that need no geometric verification (a map's tracks), written as
    verified two-view geometries that ``geometric_verification`` leaves as they are.
    """
    import pycolmap

    with pycolmap.Database.open(str(path)) as database:
        for camera_id, camera in cameras.items():
            colmap_camera = camera.to_pycolmap(camera_id)
            colmap_camera.has_prior_focal_length = True
            database.write_camera(colmap_camera, use_camera_id=True)
            rig = pycolmap.Rig(rig_id=camera_id)
            rig.add_ref_sensor(pycolmap.sensor_t(type=pycolmap.SensorType.CAMERA, id=camera_id))
            database.write_rig(rig, use_rig_id=True)
        for image in images:
            database.write_image(
                pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image.image_id), use_image_id=True
            )
            frame = pycolmap.Frame(frame_id=image.image_id, rig_id=image.camera_id)
            frame.add_data_id(
                pycolmap.data_t(
                    sensor_id=pycolmap.sensor_t(type=pycolmap.SensorType.CAMERA, id=image.camera_id), id=image.image_id
                )
            )
            database.write_frame(frame, use_frame_id=True)
            # COLMAP puts the first pixel centre at 0.5.
            database.write_keypoints(image.image_id, (image.keypoints + 0.5).astype(np.float32))
        for (i, j), pair_matches in matches.items():
            database.write_matches(i, j, pair_matches.astype(np.uint32))
        for (i, j), correspondences in (verified or {}).items():
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            geometry.inlier_matches = correspondences.astype(np.uint32)
            database.write_two_view_geometry(i, j, geometry)


def track_correspondences(model_dir: Path) -> dict[tuple[int, int], np.ndarray]:
    """Per pair of image ids (i < j) of the COLMAP model in ``model_dir``, its correspondences: rows
    (keypoint of i, keypoint of j) that observe one 3D point."""
    import pycolmap

    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for point in pycolmap.Reconstruction(str(model_dir)).points3D.values():
        elements = sorted((element.image_id, element.point2D_idx) for element in point.track.elements)
        for a, (i, p) in enumerate(elements):
            for j, q in elements[a + 1 :]:
                if i != j:
                    pairs.setdefault((i, j), []).append((p, q))
    return {pair: np.array(rows, dtype=np.int64) for pair, rows in pairs.items()}


def _pipeline_options(config: dict, default_threads: int):
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.ba_refine_focal_length = False  # intrinsics are known: calibrated cameras stay fixed
    options.ba_refine_principal_point = False
    options.ba_refine_extra_params = False
    options.extract_colors = False
    options.num_threads = default_threads if config.get("num_threads") is None else config["num_threads"]
    options.random_seed = config.get("seed", 0)
    options.min_num_matches = config.get("min_num_matches", 15)
    options.mapper.abs_pose_refine_focal_length = False
    options.mapper.abs_pose_refine_extra_params = False
    return options


def reconstruct(
    database_path: Path,
    work_dir: Path,
    cameras: dict[int, Camera],
    images: list[ColmapImage],
    config: dict,
    on_image_registered: Callable[[], None] | None = None,
    existing: Path | None = None,
):
    """Verify matches, then map (poses unknown) or triangulate (all poses of ``images`` known).

    ``existing``: a COLMAP model (a map's ``sparse/``) that ``images`` join. Its frames keep their poses:
    incremental mapping holds them fixed and triangulation adds points to it.
    Returns the pycolmap Reconstruction; with unknown poses the largest model is kept.
    """
    import pycolmap

    quiet_pycolmap()
    # A fixed RANSAC seed: COLMAP's default (-1) seeds from the clock, so the same input would give
    # maps that differ in which matches survive (docs/decisions.md).
    two_view = pycolmap.TwoViewGeometryOptions()
    two_view.ransac.random_seed = config.get("seed", 0)
    pycolmap.geometric_verification(str(database_path), two_view_geometry_options=two_view)
    known_poses = all(image.world_from_camera is not None for image in images)
    # Triangulation from known poses gives the same points for the same input on all cores (-1);
    # COLMAP's incremental mapping only on one (llff_beer: 2257 and 2311 points from two runs on all
    # cores, 2195 twice on one; 57 -> 62 s).
    options = _pipeline_options(config, default_threads=-1 if known_poses else 1)
    if known_poses:
        # With known poses every point the localizer gets must be well triangulated: at 3 m, 1.5 deg
        # (COLMAP's default, right for incremental SfM, where fewer points register fewer images) and
        # 1 px of noise leave ~0.2 m of depth error; 3 deg halves it.
        options.triangulation.min_angle = config["min_triangulation_angle_deg"]
        options.mapper.filter_min_tri_angle = config["min_triangulation_angle_deg"]
        reference = pycolmap.Reconstruction(str(existing)) if existing else pycolmap.Reconstruction()
        for camera_id, camera in cameras.items():
            if camera_id not in reference.cameras:
                reference.add_camera_with_trivial_rig(camera.to_pycolmap(camera_id))
        for image in images:
            camera_from_world = image.world_from_camera.inverse()
            reference.add_image_with_trivial_frame(
                pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image.image_id),
                pycolmap.Rigid3d(pycolmap.Rotation3d(camera_from_world.rotation), camera_from_world.translation),
            )
        output = work_dir / "triangulated"
        output.mkdir(parents=True, exist_ok=True)
        # An update keeps the map's points and adds to them (clear_points=False).
        return pycolmap.triangulate_points(
            reference, str(database_path), str(work_dir), str(output), clear_points=existing is None, options=options
        )
    if existing:
        options.fix_existing_frames = True  # the map frame stays where the map put it
        options.multiple_models = False  # new images that do not join the map make no model of their own
    output = work_dir / "incremental"
    output.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(
        str(database_path),
        str(work_dir),
        str(output),
        options,
        input_path=str(existing or ""),
        next_image_callback=on_image_registered,
    )
    if not models:
        return None
    return max(models.values(), key=lambda model: model.num_reg_images())
