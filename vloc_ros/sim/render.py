"""Headless CPU rendering of a ``Scene`` with pyrender: colour and metric depth for a camera pose.

OpenGL context: ``PYOPENGL_PLATFORM`` if set, else EGL (Mesa, software) when it initialises,
else OSMesa. Surfaces are drawn unlit (``RenderFlags.FLAT``): the texture colour times a
per-surface gain, which is how ``appearance.py`` changes the illumination.

Pixel convention: OpenCV, pixel centres at integers. pyrender's window coordinates put pixel
centres at +0.5, so its principal point is ``cx + 0.5, cy + 0.5``.

Lens distortion (plumb_bob) is applied exactly by inverse mapping: for every pixel ``d`` of the
distorted output image, ``p = Camera.undistort_points(d)`` is the ideal pinhole pixel that sees
the same ray, and ``cv2.remap`` samples a pinhole rendering (enlarged by a margin so that every
``p`` falls inside it) at ``p``. The rendered image then satisfies
``pixel = camera.project(camera_from_world(X))`` for every visible world point ``X``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import cv2
import numpy as np

from ..geometry import Camera, Rigid3
from .scene import Scene, Surface

BACKGROUND_RGB = (0.62, 0.74, 0.88)  # a pale sky
# Camera frames: optical (x right, y down, z forward) -> OpenGL's (x right, y up, z backward).
OPTICAL_FROM_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
MAX_DISTORTION_MARGIN = 1.0  # the pinhole rendering may grow by at most this fraction per side
MAX_DISTORTION_ROUND_TRIP_PX = 0.01
EGL_PLATFORM_DEVICE_EXT = 0x313F
ATLAS_WIDTH = 4096
ATLAS_PADDING = 32  # texels around each texture in the atlas: clean filtering down to mipmap level 5
MAX_ATLAS_PIXELS = 16384  # GL_MAX_TEXTURE_SIZE of llvmpipe and of most GPUs


def _egl_initialises() -> bool:
    """Whether EGL opens a display the way pyrender does (first EGL device, else the default
    display); probed with ctypes so that PyOpenGL is not yet bound to a platform."""
    library = ctypes.util.find_library("EGL")
    if library is None:
        return False
    try:
        egl = ctypes.CDLL(library)
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        egl.eglGetDisplay.restype = ctypes.c_void_p
        egl.eglGetDisplay.argtypes = [ctypes.c_void_p]
        egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        egl.eglTerminate.argtypes = [ctypes.c_void_p]
        query_devices = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
        platform_display = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
        display = None
        if query_devices and platform_display:
            devices, count = (ctypes.c_void_p * 1)(), ctypes.c_int()
            query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
            if query(query_devices)(1, devices, ctypes.byref(count)) and count.value > 0:
                get_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)
                display = get_display(platform_display)(EGL_PLATFORM_DEVICE_EXT, devices[0], None)
        else:
            display = egl.eglGetDisplay(None)
        major, minor = ctypes.c_int(), ctypes.c_int()
        if not display or not egl.eglInitialize(display, ctypes.byref(major), ctypes.byref(minor)):
            return False
        egl.eglTerminate(display)
        return True
    except (OSError, AttributeError):
        return False


def _import_pyrender():
    # PyOpenGL binds its platform at first import: choose before pyrender imports it.
    if "PYOPENGL_PLATFORM" not in os.environ:
        if _egl_initialises():
            os.environ["PYOPENGL_PLATFORM"] = "egl"
        elif ctypes.util.find_library("OSMesa"):
            os.environ["PYOPENGL_PLATFORM"] = "osmesa"
        else:
            raise RuntimeError(
                "no headless OpenGL for the simulator: EGL does not initialise and OSMesa is "
                "missing; install Mesa's EGL (libegl1 libegl-mesa0) or OSMesa (libosmesa6)"
            )
    import pyrender

    return pyrender


def check_distortion(camera: Camera) -> None:
    """Raise ValueError unless the distortion is invertible over the whole image (what the warp needs)."""
    if not camera.has_distortion:
        return
    ideal = _undistorted_pixel_grid(camera)
    rays = np.column_stack(
        [(ideal[:, 0] - camera.cx) / camera.fx, (ideal[:, 1] - camera.cy) / camera.fy, np.ones(len(ideal))]
    )
    reprojected, _ = camera.project(rays)
    grid = _pixel_grid(camera.width, camera.height)
    error = float(np.max(np.linalg.norm(reprojected - grid, axis=1))) if np.isfinite(ideal).all() else np.inf
    if not error <= MAX_DISTORTION_ROUND_TRIP_PX:
        raise ValueError(
            f"distortion {list(camera.distortion)} is not invertible over the {camera.width}x"
            f"{camera.height} image (round trip error {error:.3g} px); use smaller coefficients"
        )
    low, high = ideal.min(axis=0), ideal.max(axis=0)
    size = np.array([camera.width, camera.height])
    if np.any(-low > MAX_DISTORTION_MARGIN * size) or np.any(high - size > MAX_DISTORTION_MARGIN * size):
        raise ValueError(
            f"distortion {list(camera.distortion)} is too strong: the undistorted field of view "
            f"is more than {1 + 2 * MAX_DISTORTION_MARGIN:g}x the image"
        )


def _pixel_grid(width: int, height: int) -> np.ndarray:
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.column_stack([u.ravel(), v.ravel()])


def _undistorted_pixel_grid(camera: Camera) -> np.ndarray:
    return camera.undistort_points(_pixel_grid(camera.width, camera.height))


def pack_atlas(textures: dict[str, np.ndarray], padding: int = ATLAS_PADDING) -> tuple[np.ndarray, dict]:
    """All textures in one image (shelf packing, tallest first), each framed by ``padding`` replicated
    edge pixels so that filtering and coarse mipmap levels do not bleed between neighbours.
    Returns the atlas and ``name -> (top, left, height, width)`` of each texture inside it."""
    width = max(ATLAS_WIDTH, max(t.shape[1] for t in textures.values()) + 2 * padding)
    places, row_top, row_height, column = {}, 0, 0, 0
    for name in sorted(textures, key=lambda n: (-textures[n].shape[0], n)):
        height_px, width_px = textures[name].shape[:2]
        if column + width_px + 2 * padding > width:
            row_top, row_height, column = row_top + row_height, 0, 0
        places[name] = (row_top + padding, column + padding, height_px, width_px)
        row_height = max(row_height, height_px + 2 * padding)
        column += width_px + 2 * padding
    atlas = np.zeros((row_top + row_height, width, 3), dtype=np.uint8)
    for name, (top, left, height_px, width_px) in places.items():
        framed = cv2.copyMakeBorder(textures[name], padding, padding, padding, padding, cv2.BORDER_REPLICATE)
        atlas[top - padding : top + height_px + padding, left - padding : left + width_px + padding] = framed
    if max(atlas.shape[:2]) > MAX_ATLAS_PIXELS:
        raise ValueError(
            f"scene textures need a {atlas.shape[1]}x{atlas.shape[0]} atlas, more than "
            f"{MAX_ATLAS_PIXELS} px; use a smaller scene or image size"
        )
    return atlas, places


class Renderer:
    """Renders ``scene`` through ``camera``: ``render(world_from_camera)`` -> RGB uint8,
    ``render_depth(world_from_camera)`` -> metric depth.

    All static surfaces form one mesh over one texture atlas (two draw calls a frame, not one per
    quad: pyrender's per-draw Python overhead would dominate); per-surface gains are vertex colours.
    """

    def __init__(self, scene: Scene, camera: Camera):
        check_distortion(camera)
        pyrender = _import_pyrender()
        from OpenGL.GL import GL_CLAMP_TO_EDGE, GL_LINEAR, GL_LINEAR_MIPMAP_NEAREST

        self.scene, self.camera = scene, camera
        self._pyrender = pyrender
        self._render_scene = pyrender.Scene(bg_color=[*BACKGROUND_RGB, 1.0], ambient_light=[1.0, 1.0, 1.0])
        atlas, places = pack_atlas(scene.textures)
        # Bilinear within the nearest mipmap level: trilinear costs llvmpipe twice the time for no visible gain.
        sampler = pyrender.Sampler(
            magFilter=GL_LINEAR, minFilter=GL_LINEAR_MIPMAP_NEAREST, wrapS=GL_CLAMP_TO_EDGE, wrapT=GL_CLAMP_TO_EDGE
        )
        self._material = pyrender.MetallicRoughnessMaterial(
            baseColorTexture=pyrender.Texture(source=atlas, source_channels="RGB", sampler=sampler),
            baseColorFactor=[1.0, 1.0, 1.0, 1.0],
        )
        self._atlas_shape, self._places = atlas.shape[:2], places
        self._static_node, self._static_gains = None, None
        self._set_static_gains(np.ones((len(scene.surfaces), 3)))
        self._movers = {}
        for name, surfaces in scene.movers.items():
            node = self._render_scene.add(self._mesh(surfaces, None), name=name)
            self._movers[name] = node

        self._setup_camera(camera)
        try:
            self._renderer = pyrender.OffscreenRenderer(self._render_size[0], self._render_size[1])
        except Exception as error:  # noqa: BLE001 - any GL failure means the same to the user
            raise RuntimeError(
                f"cannot open an offscreen OpenGL context with PYOPENGL_PLATFORM="
                f"{os.environ.get('PYOPENGL_PLATFORM')!r} ({error}); try PYOPENGL_PLATFORM=osmesa "
                "with libosmesa6 installed"
            ) from error

    def _mesh(self, surfaces: list[Surface], gains: np.ndarray | None):
        """One primitive for all ``surfaces`` (front faces counter-clockwise, back faces culled)."""
        atlas_height, atlas_width = self._atlas_shape
        uvs = []
        for surface in surfaces:
            top, left, height, width = self._places[surface.texture]
            # OpenGL's v runs bottom-up and pyrender uploads the atlas flipped: v = 1 is atlas row 0.
            u0, u1 = left / atlas_width, (left + width) / atlas_width
            v_top, v_bottom = 1.0 - top / atlas_height, 1.0 - (top + height) / atlas_height
            uvs.append([[u0, v_bottom], [u1, v_bottom], [u1, v_top], [u0, v_top]])
        first = 4 * np.arange(len(surfaces))[:, None]
        indices = np.concatenate([first + [0, 1, 2], first + [0, 2, 3]])
        colours = None if gains is None else np.column_stack([np.repeat(gains, 4, axis=0), np.ones(4 * len(surfaces))])
        primitive = self._pyrender.Primitive(
            positions=np.concatenate([surface.corners for surface in surfaces]).astype(np.float32),
            texcoord_0=np.asarray(uvs, dtype=np.float32).reshape(-1, 2),
            color_0=colours,
            indices=indices.astype(np.uint32),
            material=self._material,
        )
        return self._pyrender.Mesh([primitive])

    def _set_static_gains(self, gains: np.ndarray) -> None:
        if self._static_gains is not None and np.array_equal(gains, self._static_gains):
            return
        # Swapping the mesh re-uploads only its vertices; the atlas texture stays in the GL context.
        if self._static_node is not None:
            self._render_scene.remove_node(self._static_node)
        self._static_node = self._render_scene.add(self._mesh(self.scene.surfaces, gains), name="static")
        self._static_gains = gains.copy()

    def _setup_camera(self, camera: Camera) -> None:
        pinhole = camera.pinhole()
        margin = np.zeros(4, dtype=int)  # left, top, right, bottom
        self._remap = None
        if camera.has_distortion:
            ideal = _undistorted_pixel_grid(camera)
            low, high = ideal.min(axis=0), ideal.max(axis=0)
            # +2: bilinear sampling needs the next pixel too.
            margin[:2] = np.maximum(0, np.ceil(-low) + 2).astype(int)
            margin[2:] = np.maximum(0, np.ceil(high - [camera.width - 1, camera.height - 1]) + 2).astype(int)
            shape = (camera.height, camera.width)
            self._remap = (
                (ideal[:, 0] + margin[0]).reshape(shape).astype(np.float32),
                (ideal[:, 1] + margin[1]).reshape(shape).astype(np.float32),
            )
        self._render_size = (camera.width + margin[0] + margin[2], camera.height + margin[1] + margin[3])
        far = 4.0 * self.scene.size + 10.0
        gl_camera = self._pyrender.IntrinsicsCamera(
            pinhole.fx, pinhole.fy, pinhole.cx + margin[0] + 0.5, pinhole.cy + margin[1] + 0.5, znear=0.02, zfar=far
        )
        self._camera_node = self._render_scene.add(gl_camera)

    def _place(self, world_from_camera: Rigid3, mover_poses: dict[str, Rigid3] | None) -> None:
        mover_poses = mover_poses or {}
        for name, node in self._movers.items():
            node.mesh.is_visible = name in mover_poses
            if name in mover_poses:
                self._render_scene.set_pose(node, mover_poses[name].matrix)
        self._render_scene.set_pose(self._camera_node, world_from_camera.matrix @ OPTICAL_FROM_OPENGL)

    def render(
        self,
        world_from_camera: Rigid3,
        surface_gains: np.ndarray | None = None,
        mover_poses: dict[str, Rigid3] | None = None,
    ) -> np.ndarray:
        """The HxWx3 uint8 RGB image (4x multisampled: anti-aliased edges, interiors sampled at pixel centres).

        ``surface_gains`` (num_surfaces, 3) multiplies each static surface's texture (default 1);
        a mover is drawn only when ``mover_poses`` gives its ``world_from_object`` pose.
        """
        gains = np.ones((len(self.scene.surfaces), 3)) if surface_gains is None else np.asarray(surface_gains)
        if gains.shape != (len(self.scene.surfaces), 3):
            raise ValueError(f"surface_gains must be ({len(self.scene.surfaces)}, 3), got {gains.shape}")
        self._set_static_gains(gains)
        self._place(world_from_camera, mover_poses)
        colour, _ = self._renderer.render(self._render_scene, flags=self._pyrender.RenderFlags.FLAT)
        if self._remap is not None:
            colour = cv2.remap(colour, *self._remap, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(colour)

    def render_depth(self, world_from_camera: Rigid3, mover_poses: dict[str, Rigid3] | None = None) -> np.ndarray:
        """HxW float32 depth: metres along the optical axis of what each pixel centre sees, 0 = sky.

        A separate pass: pyrender resolves depth by copying one multisample (off the pixel centre
        by a fraction of a pixel), but its segmentation mode disables multisampling."""
        self._place(world_from_camera, mover_poses)
        visible = {self._static_node: (255, 255, 255)}
        visible.update({node: (255, 255, 255) for node in self._movers.values() if node.mesh.is_visible})
        _, depth = self._renderer.render(self._render_scene, flags=self._pyrender.RenderFlags.SEG, seg_node_map=visible)
        if self._remap is not None:
            # Nearest: interpolating across an occlusion edge would invent geometry.
            depth = cv2.remap(depth, *self._remap, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return depth.astype(np.float32)

    def close(self) -> None:
        self._renderer.delete()

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
