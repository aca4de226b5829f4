"""Geometry with pycolmap: database import, geometric verification, then either incremental
mapping (unknown poses; known intrinsics held fixed) or triangulation from known poses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..geometry import Camera, Rigid3

if TYPE_CHECKING:  # only annotations: reading poses (sources) needs no feature code
    from ..features import Features


# The COLMAP image id of the frame at ``index`` in the lists given to ``write_database`` and
# ``reconstruct`` (COLMAP ids start at 1); the builder maps registered ids back with ``frame_index``.
def image_id(index: int) -> int:
    return index + 1


def frame_index(colmap_image_id: int) -> int:
    return colmap_image_id - 1


def world_from_camera(image) -> Rigid3:
    """The pose of a posed pycolmap ``Image`` as ``world_from_camera`` (COLMAP stores cam_from_world)."""
    pose = image.cam_from_world()
    return Rigid3(pose.rotation.matrix(), pose.translation).inverse()


def quiet_pycolmap() -> None:
    """pycolmap logs every step through glog. Its warnings here are about the image files it looks
    for to colour points, which a build from cached features (or a bag) deliberately never writes."""
    import pycolmap

    pycolmap.logging.minloglevel = pycolmap.logging.ERROR


def _camera_ids(cameras: list[Camera]) -> tuple[list[Camera], list[int]]:
    """Distinct cameras and, per frame, the 1-based id of its camera."""
    distinct: list[Camera] = []
    ids = []
    for camera in cameras:
        if camera not in distinct:
            distinct.append(camera)
        ids.append(distinct.index(camera) + 1)
    return distinct, ids


def write_database(
    path: Path,
    names: list[str],
    cameras: list[Camera],
    features: list[Features],
    matches: dict[tuple[int, int], np.ndarray],
) -> None:
    """A COLMAP database with one trivial rig per camera and one frame per image.

    Image ids are ``image_id(frame index)``, camera ids as ``_camera_ids``.
    """
    import pycolmap

    distinct, camera_ids = _camera_ids(cameras)
    with pycolmap.Database.open(str(path)) as database:
        rig_ids = {}
        for camera_id, camera in enumerate(distinct, start=1):
            colmap_camera = camera.to_pycolmap(camera_id)
            colmap_camera.has_prior_focal_length = True
            database.write_camera(colmap_camera, use_camera_id=True)
            rig = pycolmap.Rig()
            rig.add_ref_sensor(pycolmap.sensor_t(type=pycolmap.SensorType.CAMERA, id=camera_id))
            rig_ids[camera_id] = database.write_rig(rig)
        for index, (name, camera_id, frame_features) in enumerate(zip(names, camera_ids, features)):
            database.write_image(
                pycolmap.Image(name=name, camera_id=camera_id, image_id=image_id(index)), use_image_id=True
            )
            frame = pycolmap.Frame()
            frame.rig_id = rig_ids[camera_id]
            frame.add_data_id(
                pycolmap.data_t(
                    sensor_id=pycolmap.sensor_t(type=pycolmap.SensorType.CAMERA, id=camera_id), id=image_id(index)
                )
            )
            database.write_frame(frame)
            # COLMAP puts the first pixel centre at 0.5.
            database.write_keypoints(image_id(index), (frame_features.keypoints + 0.5).astype(np.float32))
        for (i, j), pair_matches in matches.items():
            database.write_matches(image_id(i), image_id(j), pair_matches.astype(np.uint32))


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
    names: list[str],
    cameras: list[Camera],
    poses: list[Rigid3 | None],
    config: dict,
    on_image_registered: Callable[[], None] | None = None,
):
    """Verify matches, then map (poses unknown) or triangulate (all poses known).

    Returns the pycolmap Reconstruction; with unknown poses the largest model is kept.
    """
    import pycolmap

    quiet_pycolmap()
    # A fixed RANSAC seed: COLMAP's default (-1) seeds from the clock, so the same input would give
    # maps that differ in which matches survive (docs/decisions.md).
    two_view = pycolmap.TwoViewGeometryOptions()
    two_view.ransac.random_seed = config.get("seed", 0)
    pycolmap.geometric_verification(str(database_path), two_view_geometry_options=two_view)
    known_poses = all(pose is not None for pose in poses)
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
        reference = pycolmap.Reconstruction()
        distinct, camera_ids = _camera_ids(cameras)
        for camera_id, camera in enumerate(distinct, start=1):
            reference.add_camera_with_trivial_rig(camera.to_pycolmap(camera_id))
        for index, (name, camera_id, pose) in enumerate(zip(names, camera_ids, poses)):
            camera_from_world = pose.inverse()
            reference.add_image_with_trivial_frame(
                pycolmap.Image(name=name, camera_id=camera_id, image_id=image_id(index)),
                pycolmap.Rigid3d(pycolmap.Rotation3d(camera_from_world.rotation), camera_from_world.translation),
            )
        output = work_dir / "triangulated"
        output.mkdir(parents=True, exist_ok=True)
        return pycolmap.triangulate_points(reference, str(database_path), str(work_dir), str(output), options=options)
    output = work_dir / "incremental"
    output.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(
        str(database_path), str(work_dir), str(output), options, next_image_callback=on_image_registered
    )
    if not models:
        return None
    return max(models.values(), key=lambda model: model.num_reg_images())
