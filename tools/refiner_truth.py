"""A rendered "real" person with a known truth, for judging the refiner (``./cadence eval refiner-truth``).

The default head plays a take generated from a speech clip (lips, expression, blinks, generic head motion).
Cycles renders it with a look unlike Cadence's Eevee render: a tanned skin with subsurface scattering, a
mottled colour and a pore bump; darker lips; hair (a shell grown from the head's own scalp); a plastered wall
behind; a key light with soft shadows, a fill and a rim. The frames go to an mp4 at the
take's rate. The camera is known, so the "tracked" camera is the true one and the Eevee renders of the same
take are exact pairs: what the refiner has to learn is the look alone (with the shadows and the hair it
implies). Runs in Blender's Python inside ``tools/eval_refiner.py``'s session; the head's own materials are
put back before the Eevee renders.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

WIDTH, HEIGHT, FOCAL_PX = 384, 288, 800.0
CAMERA_POSITION = (0.03, -0.02, 0.9)  # model space (FLAME axes), metres: the head ~140 px wide
CYCLES_SAMPLES = 8
VERSION = "truth-v2"  # bump when the look changes (the cache is keyed by it)


def camera() -> dict:
    return {"focal_px": FOCAL_PX, "width": WIDTH, "height": HEIGHT, "position": list(CAMERA_POSITION)}


# ------------------------------------------------------------------------------ materials
def _principled(name: str) -> tuple[bpy.types.Material, bpy.types.Node, bpy.types.NodeTree]:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    tree = mat.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    return mat, bsdf, tree


def _noise_colour(tree, bsdf, scale: float, dark, light, coords: str = "Object") -> None:
    """Base colour = a colour ramp over a noise texture (mottled, not flat like Cadence's own skin)."""
    tex = tree.nodes.new("ShaderNodeTexCoord")
    noise = tree.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = scale
    noise.inputs["Detail"].default_value = 6.0
    tree.links.new(tex.outputs[coords], noise.inputs["Vector"])
    ramp = tree.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*dark, 1.0)
    ramp.color_ramp.elements[1].color = (*light, 1.0)
    tree.links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    tree.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])


def _bump(tree, bsdf, scale: float, strength: float) -> None:
    noise = tree.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = scale
    bump = tree.nodes.new("ShaderNodeBump")
    bump.inputs["Strength"].default_value = strength
    tree.links.new(noise.outputs["Fac"], bump.inputs["Height"])
    tree.links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])


def _skin(name: str, dark, light, roughness: float, sss: float) -> bpy.types.Material:
    mat, bsdf, tree = _principled(name)
    _noise_colour(tree, bsdf, 25.0, dark, light)
    _bump(tree, bsdf, 900.0, 0.08)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Subsurface Weight"].default_value = sss
    bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.35, 0.2)
    bsdf.inputs["Subsurface Scale"].default_value = 0.004
    return mat


def _plain(name: str, colour, roughness: float, coat: float = 0.0) -> bpy.types.Material:
    mat, bsdf, _tree = _principled(name)
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Coat Weight"].default_value = coat
    return mat


def _hair_material() -> bpy.types.Material:
    mat, bsdf, tree = _principled("Truth Hair")
    tex = tree.nodes.new("ShaderNodeTexCoord")
    wave = tree.nodes.new("ShaderNodeTexWave")
    wave.inputs["Scale"].default_value = 60.0
    wave.inputs["Distortion"].default_value = 6.0
    wave.inputs["Detail"].default_value = 4.0
    tree.links.new(tex.outputs["Object"], wave.inputs["Vector"])
    ramp = tree.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (0.012, 0.007, 0.004, 1.0)
    ramp.color_ramp.elements[1].color = (0.09, 0.05, 0.025, 1.0)
    tree.links.new(wave.outputs["Fac"], ramp.inputs["Fac"])
    tree.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.55
    _bump(tree, bsdf, 400.0, 0.3)
    return mat


def _wall_material() -> bpy.types.Material:
    mat, bsdf, tree = _principled("Truth Wall")
    _noise_colour(tree, bsdf, 3.0, (0.10, 0.16, 0.20), (0.35, 0.30, 0.22))
    _bump(tree, bsdf, 40.0, 0.2)
    bsdf.inputs["Roughness"].default_value = 0.8
    return mat


def truth_materials() -> dict[str, bpy.types.Material]:
    """Part name -> the truth look's material (parts as in ``operators/rig/materials.py``)."""
    return {
        "skin": _skin("Truth Skin", (0.30, 0.13, 0.07), (0.55, 0.30, 0.18), 0.42, 0.25),
        "lips": _skin("Truth Lips", (0.30, 0.07, 0.06), (0.45, 0.14, 0.11), 0.3, 0.2),
        "mouth": _plain("Truth Mouth", (0.12, 0.02, 0.02), 0.5),
        "eyes": _plain("Truth Eye White", (0.72, 0.66, 0.60), 0.05, coat=1.0),
        "iris": _plain("Truth Iris", (0.08, 0.05, 0.02), 0.05, coat=1.0),
        "pupil": _plain("Truth Pupil", (0.005, 0.005, 0.005), 0.05, coat=1.0),
        "teeth": _plain("Truth Teeth", (0.70, 0.66, 0.55), 0.25),
        "brows": _plain("Truth Brows", (0.02, 0.012, 0.008), 0.7),
    }


# ------------------------------------------------------------------------------ scene
def _hair(rig: bpy.types.Object, mesh: bpy.types.Object, bone: str) -> bpy.types.Object:
    """A shell over the scalp: the head's own triangles above a hairline, pushed out along their normals.
    Follows the head bone by a Child Of constraint (not a child of the rig, so Cadence's renders leave it out)."""
    data = mesh.data
    n = len(data.vertices)
    co = np.empty(n * 3, np.float32)
    data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    nor = np.empty(n * 3, np.float32)
    data.vertices.foreach_get("normal", nor)
    nor = nor.reshape(-1, 3)
    data.calc_loop_triangles()
    tri = np.empty(len(data.loop_triangles) * 3, np.int32)
    data.loop_triangles.foreach_get("vertices", tri)
    tri = tri.reshape(-1, 3)
    # mesh space = model space here (FLAME axes: +Y up, +Z out of the face)
    y, z, x = co[:, 1], co[:, 2], co[:, 0]
    hairline = np.interp(z, [-0.12, -0.02, 0.04, 0.09], [-0.08, 0.0, 0.05, 0.068]) + 0.03 * (np.abs(x) > 0.07)
    keep = (y > hairline)[tri].all(1)
    used = np.unique(tri[keep])
    remap = np.full(n, -1)
    remap[used] = np.arange(len(used))
    verts = co[used] + 0.006 * nor[used]
    hair = bpy.data.meshes.new("Truth Hair")
    hair.from_pydata(verts.tolist(), [], remap[tri[keep]].tolist())
    hair.materials.append(_hair_material())
    for p in hair.polygons:
        p.use_smooth = True
    obj = bpy.data.objects.new("Truth Hair", hair)
    bpy.context.scene.collection.objects.link(obj)
    obj.matrix_world = mesh.matrix_world
    con = obj.constraints.new("CHILD_OF")
    con.target, con.subtarget = rig, bone
    pb = rig.pose.bones[bone]
    con.inverse_matrix = (rig.matrix_world @ pb.matrix).inverted()
    return obj


def _light(scene, name: str, kind: str, energy: float, matrix: Matrix, size: float = 0.5) -> None:
    data = bpy.data.lights.new(name, kind)
    data.energy = energy
    if kind == "AREA":
        data.size = size
    obj = bpy.data.objects.new(name, data)
    scene.collection.objects.link(obj)
    obj.matrix_world = matrix


def _look_at(eye: Vector, target: Vector) -> Matrix:
    rot = (target - eye).to_track_quat("-Z", "Y").to_matrix().to_4x4()
    return Matrix.Translation(eye) @ rot


def dress_scene(scene: bpy.types.Scene, rig: bpy.types.Object, mesh: bpy.types.Object, bone: str,
                samples: int = CYCLES_SAMPLES) -> None:
    """Cycles, the camera, lights, a wall and hair (call at the rest pose, before the take is keyed)."""
    from_model = rig.matrix_world
    head = from_model @ Vector((0.0, 0.0, 0.0))
    cam_pos = from_model @ Vector(CAMERA_POSITION)
    _hair(rig, mesh, bone)
    wall = bpy.data.meshes.new("Truth Wall")
    s = 1.5
    wall.from_pydata([(-s, -s, 0), (s, -s, 0), (s, s, 0), (-s, s, 0)], [], [(0, 1, 2, 3)])
    wall.materials.append(_wall_material())
    wall_obj = bpy.data.objects.new("Truth Wall", wall)
    scene.collection.objects.link(wall_obj)
    wall_obj.matrix_world = from_model.to_3x3().to_4x4() @ Matrix.Translation((0.1, 0.0, -0.45))
    key = head + (cam_pos - head).normalized() * 0.9 + from_model.to_3x3() @ Vector((0.6, 0.45, 0.0))
    fill = head + from_model.to_3x3() @ Vector((-0.8, -0.1, 0.7))
    rim = head + from_model.to_3x3() @ Vector((-0.3, 0.6, -0.6))
    _light(scene, "Truth Key", "AREA", 14.0, _look_at(key, head), 0.4)
    _light(scene, "Truth Fill", "AREA", 4.0, _look_at(fill, head), 1.0)
    _light(scene, "Truth Rim", "AREA", 8.0, _look_at(rim, head), 0.3)
    world = bpy.data.worlds.new("Truth World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs[0].default_value = (0.05, 0.055, 0.06, 1.0)
    scene.world = world
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 4
    r.resolution_x, r.resolution_y, r.resolution_percentage = WIDTH, HEIGHT, 100
    r.film_transparent = False
    r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.exposure = -0.3


class swapped_materials:
    """The truth look's materials on ``mesh`` inside the block; the head's own put back after.
    ``palette``: Cadence's part -> (material name, ...) table (``operators/rig/materials.py``)."""

    def __init__(self, mesh: bpy.types.Object, palette: dict):
        self.mesh, self.saved = mesh, []
        self.part_of = {v[0]: k for k, v in palette.items()}

    def __enter__(self):
        looks = truth_materials()
        mats = self.mesh.data.materials
        self.saved = list(mats)
        for i, m in enumerate(self.saved):
            mats[i] = looks[self.part_of.get(m.name if m else "", "skin")]
        return self

    def __exit__(self, *exc) -> None:
        mats = self.mesh.data.materials
        for i, m in enumerate(self.saved):
            mats[i] = m


def render_truth(scene: bpy.types.Scene, mesh: bpy.types.Object, palette: dict, first: int, last: int,
                 video_out: str, log=print) -> int:
    """Cycles renders of frames first..last -> ``video_out`` (mp4 at the scene's rate); returns the frame count."""
    from inference.refiner.video_out import write_mp4

    fps = scene.render.fps / scene.render.fps_base
    tmp = Path(tempfile.mkdtemp(prefix="cadence-truth-"))
    t0 = time.perf_counter()
    files = []
    with swapped_materials(mesh, palette):
        for i, frame in enumerate(range(first, last + 1)):
            scene.frame_set(frame)
            scene.render.filepath = str(tmp / f"truth_{i:05d}.png")
            bpy.ops.render.render(write_still=True, scene=scene.name)
            files.append(scene.render.filepath)
            if i % 25 == 0:
                left = (time.perf_counter() - t0) / (i + 1) * (last - frame)
                log(f"  truth render {i + 1}/{last - first + 1} (~{left:.0f} s left)")

    import cv2

    h, w = cv2.imread(files[0]).shape[:2]

    def frames():
        for f in files:
            yield cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)
            os.remove(f)

    write_mp4(frames(), (w, h), fps, video_out, crf=12)
    tmp.rmdir()
    log(f"rendered the truth: {len(files)} frames with Cycles ({time.perf_counter() - t0:.0f} s)")
    return len(files)
