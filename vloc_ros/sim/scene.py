"""The synthetic world: textured planar quads in a metric, z-up world frame (= the ``map`` frame).

A scene is a list of ``Surface`` quads (walls, floor, box faces), each with its own photo
texture, plus "movers": objects given in their own frame and placed per rendered frame (the
moving occluder of the queries). Two layouts:

- ``courtyard``: a square courtyard, ``size`` metres across, with walls, a floor, crates and
  pillars; every surface has its own texture, but its tiles are crops of the same few photographs
  (``textures.py``), so parts of different walls look alike to a feature matcher: a map of only part
  of the courtyard can give a confident wrong pose for a view of the unmapped part.
- ``repeated``: the same layout made exactly four-fold symmetric about the vertical axis through
  the centre: identical facades on all four walls, identical crates and pillars at rotated
  places, a floor texture unchanged by a 90 degree turn. A view and the view turned by 90 degrees
  about that axis are indistinguishable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import textures

SCENES = ("courtyard", "repeated")
MIN_WALL_HEIGHT = 2.5
MAX_TEXTURE_PIXELS = 4096

# Crates (x, y as fractions of the scene size; size in metres for a REFERENCE_SIZE scene, scaled
# with the scene; yaw in degrees). They stand between the camera ring and the walls: depth
# discontinuities and occlusion in every direction.
REFERENCE_SIZE = 6.0
COURTYARD_CRATES = (
    ((0.40, -0.15), (0.7, 0.6, 0.8), 15.0),
    ((-0.10, -0.40), (1.0, 0.5, 0.6), -10.0),
    ((-0.38, 0.12), (0.5, 0.8, 1.1), 30.0),
    ((0.12, 0.41), (0.8, 0.45, 0.5), 5.0),
)
PILLAR_POSITION = 0.40  # pillars at (+-, +-) this fraction of the size, one near each corner
PILLAR_WIDTH = 0.4  # metres in a REFERENCE_SIZE scene
OCCLUDER_SIZE = (0.35, 0.35, 1.2)


@dataclass(frozen=True)
class Surface:
    """A textured quad. ``corners`` (4, 3): bottom-left, bottom-right, top-right, top-left as seen
    from the front; the texture's top-left pixel lies at the top-left corner."""

    name: str
    kind: str  # "wall" | "floor" | "box"
    corners: np.ndarray
    texture: str

    @property
    def normal(self) -> np.ndarray:
        """Unit normal pointing to the side the surface is seen from."""
        normal = np.cross(self.corners[1] - self.corners[0], self.corners[3] - self.corners[0])
        return normal / np.linalg.norm(normal)

    @property
    def extent(self) -> tuple[float, float]:
        """(width, height) in metres."""
        return (
            float(np.linalg.norm(self.corners[1] - self.corners[0])),
            float(np.linalg.norm(self.corners[3] - self.corners[0])),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "texture": self.texture,
            "corners": np.round(self.corners, 9).tolist(),
            "normal": np.round(self.normal, 9).tolist(),
            "extent": [round(e, 9) for e in self.extent],
        }


@dataclass
class Scene:
    """Static surfaces (world frame), their textures by name, box descriptions, and movers."""

    name: str
    size: float
    wall_height: float
    pixels_per_metre: float
    surfaces: list[Surface]
    textures: dict[str, np.ndarray]
    boxes: list[dict]
    movers: dict[str, list[Surface]]  # surfaces in the mover's own frame (z up)

    def to_dict(self) -> dict:
        """What scene.json holds: the static geometry in world (map) coordinates."""
        return {
            "name": self.name,
            "units": "m",
            "frame": "map",
            "up": [0.0, 0.0, 1.0],
            "size": self.size,
            "wall_height": self.wall_height,
            "texture_pixels_per_metre": self.pixels_per_metre,
            "symmetry": {"axis_point": [0.0, 0.0], "rotation_deg": 90.0} if self.name == "repeated" else None,
            "surfaces": [surface.to_dict() for surface in self.surfaces],
            "boxes": self.boxes,
            "textures": {name: list(texture.shape[:2]) for name, texture in self.textures.items()},
        }


def yaw_rotation(yaw_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quad(name: str, kind: str, center, normal, half_width: float, half_height: float, up, texture: str) -> Surface:
    """A quad facing ``normal`` whose texture's up direction is ``up``."""
    center, normal, up = (np.asarray(v, dtype=np.float64) for v in (center, normal, up))
    right = np.cross(up, normal)  # the viewer's right when looking at the front
    corners = np.stack(
        [
            center - right * half_width - up * half_height,
            center + right * half_width - up * half_height,
            center + right * half_width + up * half_height,
            center - right * half_width + up * half_height,
        ]
    )
    return Surface(name, kind, corners, texture)


def box_faces(name: str, center, size, yaw_deg: float, texture_prefix: str) -> list[Surface]:
    """The four sides and the top of a box standing on its bottom face; textures ``{prefix}_{face}``."""
    center, half = np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64) / 2
    rotation = yaw_rotation(yaw_deg)
    x_axis, y_axis, z_axis = rotation.T
    faces = []
    for face, normal, half_normal, half_width in (
        ("px", x_axis, half[0], half[1]),
        ("nx", -x_axis, half[0], half[1]),
        ("py", y_axis, half[1], half[0]),
        ("ny", -y_axis, half[1], half[0]),
    ):
        faces.append(
            quad(
                f"{name}_{face}",
                "box",
                center + normal * half_normal,
                normal,
                half_width,
                half[2],
                z_axis,
                f"{texture_prefix}_{face}",
            )
        )
    faces.append(
        quad(f"{name}_top", "box", center + z_axis * half[2], z_axis, half[0], half[1], y_axis, f"{texture_prefix}_top")
    )
    return faces


def texture_pixels_per_metre(size: float, wall_height: float, focal_length: float) -> float:
    """Texture resolution: ~1.5 texels per image pixel at the typical wall distance (0.3 * size),
    capped so the largest texture stays below MAX_TEXTURE_PIXELS."""
    return float(min(1.5 * focal_length / (0.3 * size), MAX_TEXTURE_PIXELS / max(size, wall_height)))


def build_scene(name: str, size: float, seed: int, focal_length: float) -> Scene:
    """The scene ``name`` ("courtyard" | "repeated"), ``size`` metres across; textures drawn from ``seed``."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; choose one of {', '.join(SCENES)}")
    repeated = name == "repeated"
    rng = np.random.default_rng([seed, 7])
    wall_height = max(MIN_WALL_HEIGHT, 0.4 * size)
    scale = size / REFERENCE_SIZE  # crates and pillars grow with the scene
    ppm = texture_pixels_per_metre(size, wall_height, focal_length)
    # Tiles of TILE_PIXELS texels, about 0.75 m at the default scale.
    tile_px = textures.TILE_PIXELS

    def px(metres: float) -> int:
        return max(16, int(round(metres * ppm)))

    surfaces, texture_images, boxes = [], {}, []
    half = size / 2
    for wall, normal in (("east", (-1, 0, 0)), ("north", (0, -1, 0)), ("west", (1, 0, 0)), ("south", (0, 1, 0))):
        center = -np.asarray(normal, dtype=np.float64) * half + [0, 0, wall_height / 2]
        texture = "facade" if repeated else f"wall_{wall}"
        if texture not in texture_images:
            texture_images[texture] = textures.mosaic(px(size), px(wall_height), rng, tile_px)
        surfaces.append(quad(f"wall_{wall}", "wall", center, normal, half, wall_height / 2, (0, 0, 1), texture))

    # The floor is seen from further away and at a grazing angle: half the texel density suffices.
    floor_px = px(size / 2)
    if repeated:
        quadrant = textures.mosaic(floor_px // 2, floor_px // 2, rng, tile_px // 2)
        texture_images["floor"] = textures.four_fold_symmetric(quadrant)
    else:
        texture_images["floor"] = textures.mosaic(floor_px, floor_px, rng, tile_px // 2)
    surfaces.append(quad("floor", "floor", (0, 0, 0), (0, 0, 1), half, half, (0, 1, 0), "floor"))

    def add_box(box_name: str, center_xy, box_size, yaw_deg: float, texture_prefix: str):
        box_size = np.asarray(box_size, dtype=np.float64)
        center = np.array([center_xy[0], center_xy[1], box_size[2] / 2])
        faces = box_faces(box_name, center, box_size, yaw_deg, texture_prefix)
        for face in faces:
            if face.texture not in texture_images:
                width, height = face.extent
                texture_images[face.texture] = textures.mosaic(px(width), px(height), rng, tile_px)
        surfaces.extend(faces)
        boxes.append(
            {
                "name": box_name,
                "center": np.round(center, 9).tolist(),
                "size": box_size.tolist(),
                "yaw_deg": float(yaw_deg),
            }
        )

    if repeated:
        (x, y), crate_size, crate_yaw = COURTYARD_CRATES[0]
        for turn in range(4):
            rotation = yaw_rotation(90.0 * turn)[:2, :2]
            add_box(
                f"crate_{turn}",
                rotation @ np.array([x, y]) * size,
                np.multiply(crate_size, scale),
                crate_yaw + 90.0 * turn,
                "crate",
            )
    else:
        for index, ((x, y), crate_size, crate_yaw) in enumerate(COURTYARD_CRATES):
            add_box(f"crate_{index}", (x * size, y * size), np.multiply(crate_size, scale), crate_yaw, f"crate_{index}")
    for turn in range(4):
        corner = yaw_rotation(90.0 * turn)[:2, :2] @ np.array([PILLAR_POSITION, PILLAR_POSITION]) * size
        add_box(
            f"pillar_{turn}",
            corner,
            (PILLAR_WIDTH * scale, PILLAR_WIDTH * scale, wall_height),
            90.0 * turn,
            "pillar" if repeated else f"pillar_{turn}",
        )

    occluder_faces = box_faces("occluder", (0, 0, 0), OCCLUDER_SIZE, 0.0, "occluder")
    for face in occluder_faces:
        width, height = face.extent
        texture_images[face.texture] = textures.mosaic(px(width), px(height), rng, tile_px)
    return Scene(
        name, float(size), float(wall_height), ppm, surfaces, texture_images, boxes, {"occluder": occluder_faces}
    )
