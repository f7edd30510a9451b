"""Rendering a head and casting MediaPipe landmarks onto it (the geometry of operators/landmarks.py).

Everything is in the head MODEL's space (FLAME axes: +Y up, +Z out of the face, metres). The render
happens in a temporary scene with its own camera, world and mesh, all removed afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import os

import bpy
import numpy as np
from mathutils import Matrix, Vector
from mathutils.bvhtree import BVHTree

from ..rig import materials
from ..worker import client as worker_client
from ..worker import session as worker_session

SCHEME = "mediapipe478"
N_MEDIAPIPE = 478
RENDER_SIZE = 384
LENS_MM = 60.0
SKIN = (0.80, 0.60, 0.50, 1.0)


# MediaPipe's inner lip rings. On a closed mouth a ray through the lip seam cannot tell the upper lip from
# the lower; tracking must have these on the right lip, or an opening jaw drags the upper lip's points.
UPPER_INNER_LIP = (191, 80, 81, 82, 13, 312, 311, 310, 415, 183, 42, 41, 38, 12, 268, 271, 272, 407)
LOWER_INNER_LIP = (95, 88, 178, 87, 14, 317, 402, 318, 324, 96, 89, 179, 86, 15, 316, 403, 319, 325)
# MediaPipe's eye contours (both eyes, lid margins and corners): they belong on the lids, never on the
# eyeball a ray through the lid margin tends to hit (an upper lid point on the eyeball does not move with a blink).
EYE_CONTOURS = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
                263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)


class LandmarkError(RuntimeError):
    """Building or loading a landmark embedding failed for a reason the user can act on."""


# ------------------------------------------------------------------------------------ camera


@dataclasses.dataclass
class ViewCamera:
    """A pinhole camera in the head MODEL's space: looks along its -Z, +Y up, principal point centred."""

    rotation: np.ndarray  # (3, 3) camera -> model
    position: np.ndarray  # (3,)
    focal_px: float
    width: int
    height: int

    def rays(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit ray directions (N, 3) in model space through pixel coordinates (N, 2) (origin top-left)."""
        px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        local = np.stack([(px[:, 0] - self.width / 2) / self.focal_px, -(px[:, 1] - self.height / 2) / self.focal_px,
                          -np.ones(len(px))], 1)
        d = local @ self.rotation.T
        return np.broadcast_to(self.position, d.shape).copy(), d / np.linalg.norm(d, axis=1, keepdims=True)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) of model-space points (N, 3)."""
        local = (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation
        z = -local[:, 2]
        return np.stack([self.width / 2 + self.focal_px * local[:, 0] / z,
                         self.height / 2 - self.focal_px * local[:, 1] / z], 1)


def frame_camera(verts: np.ndarray, size: int = RENDER_SIZE, yaw_deg: float = 0.0, centre: np.ndarray | None = None,
                 extent: float | None = None, fill: float = 0.8, pitch_deg: float = 0.0,
                 lens_mm: float = LENS_MM) -> ViewCamera:
    """A camera facing the head (+Z in model space), turned ``yaw_deg`` about the vertical axis and
    raised ``pitch_deg`` (positive: looking down at the face), with a ``lens_mm`` lens (36 mm sensor).

    It frames ``extent`` metres around ``centre`` (default: the whole head) to ``fill`` of the frame.
    """
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    centre = (lo + hi) / 2 if centre is None else np.asarray(centre, dtype=np.float64)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1])) if extent is None else float(extent)
    focal_px = lens_mm / 36.0 * size  # Blender's default sensor (36 mm) spans the (square) frame
    # Distance at which ``extent`` fills ``fill`` of the frame at the head's front.
    dist = extent / fill * focal_px / size + max(hi[2] - centre[2], 0.0)
    yaw, pitch = math.radians(yaw_deg), -math.radians(pitch_deg)
    rot_y = np.array([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(pitch), -math.sin(pitch)], [0.0, math.sin(pitch), math.cos(pitch)]])
    rot = rot_y @ rot_x
    position = centre + rot @ np.array([0.0, 0.0, dist])
    return ViewCamera(rotation=rot, position=position, focal_px=focal_px, width=size, height=size)


def face_framing(bvh: BVHTree, cam: ViewCamera, lmk: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and extent (model space) of the face MediaPipe found in a whole-head view."""
    points, ok = cast_view(bvh, cam, lmk)
    if ok.sum() < 10:
        raise LandmarkError("the face MediaPipe found in the render is not on the head (only background)")
    p = points[ok]
    lo, hi = p.min(axis=0), p.max(axis=0)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
    return centre, float(max(hi[0] - lo[0], hi[1] - lo[1]))


# ------------------------------------------------------------------------------------ render


def components(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Connected-component label of each vertex (union-find by min-label propagation + pointer jumping)."""
    labels = np.arange(n_vertices)
    if not len(faces):
        return labels
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    while True:
        m = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


def vertex_colours(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Skin everywhere; eyeballs (separate, near-spherical parts, e.g. FLAME's) get a dark iris and white sclera.

    A face with blank eyes is harder for MediaPipe to read; FLAME-format heads look along +Z at rest,
    so the iris is the cap of each eyeball facing +Z.
    """
    rgb = np.tile(np.asarray(SKIN[:3]), (len(verts), 1))
    labels = components(len(verts), faces)
    ids, counts = np.unique(labels, return_counts=True)
    if len(ids) < 2:
        return rgb
    head_size = float(np.ptp(verts, axis=0).max())
    for lab, count in zip(ids, counts):
        if count == counts.max() or count < 20:
            continue
        idx = np.flatnonzero(labels == lab)
        d = verts[idx] - verts[idx].mean(axis=0)
        r = np.linalg.norm(d, axis=1)
        if not 0.03 * head_size < r.mean() < 0.15 * head_size or r.std() > 0.15 * r.mean():
            continue  # not an eyeball (teeth, tongue, a mouth bag...)
        cz = d[:, 2] / np.maximum(r, 1e-12)
        rgb[idx] = np.where(cz[:, None] > math.cos(0.25), [0.05, 0.04, 0.03],
                            np.where(cz[:, None] > math.cos(0.62), [0.30, 0.20, 0.12], [0.92, 0.90, 0.88]))
    return rgb


class HeadRenderer:
    """A temporary Workbench scene that renders one mesh (model space) through a ViewCamera, many times.

    ``groups`` (a model's meta["material_groups"]): render with the rig's own materials and the preview's
    Workbench look, so the detector sees what it sees in a render of the rig; without, skin vertex colours with
    painted eyeballs. Nothing of the current scene is used or changed; every datablock made here is deleted
    on exit (the shared Cadence materials are kept), also on error. Use as a context manager.
    """

    def __init__(self, verts: np.ndarray, faces: np.ndarray, cam: ViewCamera, groups: dict | None = None):
        self.made: list = []
        self.had_render_result = {im.name for im in bpy.data.images if im.type == "RENDER_RESULT"}
        self.scene = bpy.data.scenes.new("Cadence Landmark Render")
        try:
            self._build(verts, faces, cam, groups)
        except BaseException:
            self.close()
            raise

    def _build(self, verts: np.ndarray, faces: np.ndarray, cam: ViewCamera, groups: dict | None) -> None:
        scene = self.scene
        self.mesh = mesh = bpy.data.meshes.new("Cadence Landmark Head")
        self.made.append(mesh)
        mesh.from_pydata(np.asarray(verts).tolist(), [], np.asarray(faces).tolist())
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
        mesh.update()
        if groups:
            materials.assign(mesh, groups)
        else:
            colours = np.concatenate([vertex_colours(verts, faces), np.ones((len(verts), 1))], 1)
            attr = mesh.color_attributes.new("Cadence Landmark Colour", "FLOAT_COLOR", "POINT")
            attr.data.foreach_set("color", colours.astype(np.float32).ravel())
        obj = bpy.data.objects.new("Cadence Landmark Head", mesh)
        self.made.append(obj)
        scene.collection.objects.link(obj)

        cam_data = bpy.data.cameras.new("Cadence Landmark Camera")
        self.made.append(cam_data)
        cam_data.lens = LENS_MM
        cam_data.sensor_width = 36.0
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.clip_start, cam_data.clip_end = 1e-3, 1e3
        self.cam_obj = bpy.data.objects.new("Cadence Landmark Camera", cam_data)
        self.made.append(self.cam_obj)
        scene.collection.objects.link(self.cam_obj)
        scene.camera = self.cam_obj

        world = bpy.data.worlds.new("Cadence Landmark World")
        self.made.append(world)
        world.color = (0.05, 0.05, 0.06) if groups else (0.25, 0.25, 0.27)
        scene.world = world

        r = scene.render
        r.engine = "BLENDER_WORKBENCH"
        r.pixel_aspect_x = r.pixel_aspect_y = 1.0
        r.resolution_percentage = 100
        r.film_transparent = False
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGB"
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.color_type = "MATERIAL" if groups else "VERTEX"
        shading.show_cavity = not groups  # creases (eyelids, lips, nostrils) help the detector on a flat skin
        shading.cavity_type = "BOTH"
        scene.display.render_aa = "8"
        scene.view_settings.view_transform = "Standard"
        self.set_camera(cam)

    def set_camera(self, cam: ViewCamera) -> None:
        self.cam_obj.matrix_world = Matrix.Translation(Vector(cam.position)) @ Matrix(cam.rotation.tolist()).to_4x4()
        self.scene.render.resolution_x, self.scene.render.resolution_y = cam.width, cam.height
        # The lens that gives the camera's focal length in pixels across the (horizontal) 36 mm sensor.
        self.cam_obj.data.lens = cam.focal_px / cam.width * self.cam_obj.data.sensor_width

    def render(self, filepath: str, verts: np.ndarray | None = None) -> str:
        """Render to ``filepath`` (PNG), with the mesh's vertices moved to ``verts`` first when given."""
        if verts is not None:
            self.mesh.vertices.foreach_set("co", np.asarray(verts, dtype=np.float32).ravel())
            self.mesh.update()
        self.scene.render.filepath = filepath
        bpy.ops.render.render(write_still=True, scene=self.scene.name)
        if not os.path.isfile(filepath):
            raise LandmarkError(f"Blender did not write the landmark render to {filepath}")
        return filepath

    def close(self) -> None:
        if self.scene is not None:
            bpy.data.scenes.remove(self.scene)
            self.scene = None
        for idb in reversed(self.made):
            try:
                getattr(bpy.data, _COLLECTIONS[type(idb).__name__]).remove(idb)
            except (ReferenceError, KeyError, RuntimeError):
                pass
        self.made = []
        for im in [im for im in bpy.data.images if im.type == "RENDER_RESULT" and im.name not in self.had_render_result]:
            bpy.data.images.remove(im)

    def __enter__(self) -> HeadRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_view(verts: np.ndarray, faces: np.ndarray, cam: ViewCamera, filepath: str,
                groups: dict | None = None) -> str:
    """Render the mesh (model space) through ``cam`` into a PNG once (see HeadRenderer)."""
    with HeadRenderer(verts, faces, cam, groups) as renderer:
        return renderer.render(filepath)


_COLLECTIONS = {"Mesh": "meshes", "Object": "objects", "Camera": "cameras", "World": "worlds"}


def detect_landmarks(context: bpy.types.Context, image: str, timeout: float = 180.0) -> np.ndarray:
    """MediaPipe landmarks (478, 3) in pixels of ``image``, detected by the worker; raises LandmarkError."""
    try:
        data = worker_session.get_client(context).run_sync("detect_landmarks", {"image": image}, timeout=timeout)
    except worker_client.WorkerError as exc:
        raise LandmarkError(str(exc)) from exc
    lmk = np.asarray(data.get("landmarks", []), dtype=np.float64)
    if lmk.shape[:1] != (N_MEDIAPIPE,):
        raise LandmarkError(f"the landmark detector returned {lmk.shape} points, not 478")
    return lmk


# ------------------------------------------------------------------------------ ray casting


def barycentric(verts: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (N, 3) of points on (or projected onto the plane of) their triangles."""
    a, b, c = (verts[faces[face_idx, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) < 1e-30, 1e-30, den)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - w1 - w2, w1, w2], 1), 0.0, 1.0)  # the hit is inside: clip round-off only
    return bary / bary.sum(1, keepdims=True)


def cast_view(bvh: BVHTree, cam: ViewCamera, lmk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First surface hit (478, 3) of the ray through each landmark's pixel, and a mask of rays that hit.

    (Picking among a ray's hits by MediaPipe's relative depth, or by the depth of 2D neighbours at
    openings like the eye fissure, was measured on the default head and made the embedding worse.)
    """
    origins, dirs = cam.rays(lmk[:, :2])
    points = np.zeros((len(lmk), 3))
    ok = np.zeros(len(lmk), dtype=bool)
    for i, (o, d) in enumerate(zip(origins, dirs)):
        loc, _normal, _face, _dist = bvh.ray_cast(Vector(o), Vector(d))
        if loc is not None:
            points[i], ok[i] = loc, True
    return points, ok
