"""The Cadence head rig in Blender: build it from a HeadModel and find it again (identity and pose: ``pose``).

Layout (see the rig contract): an armature object rotated (pi/2, 0, 0) so model +Y-up maps to
Blender Z-up, bones at the model's rest joints with identity rest rotations, and the head mesh as
its child with identity transform, so mesh-local coordinates are model coordinates. Shape keys
carry identity, expression and pose correctives (driven by the bones' Euler rotations); an
Armature modifier does the linear blend skinning. Evaluated vertices then equal
HeadModel.forward() to float32 precision.
"""

from __future__ import annotations

import logging

import bpy
import numpy as np

from ...inference.heads.head_model import JOINT_NAMES, HeadModel
from . import head_cache, materials

log = logging.getLogger(__name__)

RIG_VERSION = 1
SLIDER_RANGE = 10.0  # FLAME coefficients exceed [0, 1]; Blender's hard limit for sliders is +-10.

# (R - I)[a, b] for Blender's Euler XYZ (R = Rz @ Ry @ Rx) as simple driver expressions: only
# arithmetic and sin/cos, so Blender's fast evaluator runs them without Python (render, background).
_CORRECTIVE_EXPR = {
    (0, 0): "cos(y)*cos(z) - 1",
    (0, 1): "sin(x)*sin(y)*cos(z) - cos(x)*sin(z)",
    (0, 2): "cos(x)*sin(y)*cos(z) + sin(x)*sin(z)",
    (1, 0): "cos(y)*sin(z)",
    (1, 1): "sin(x)*sin(y)*sin(z) + cos(x)*cos(z) - 1",
    (1, 2): "cos(x)*sin(y)*sin(z) - sin(x)*cos(z)",
    (2, 0): "-sin(y)",
    (2, 1): "sin(x)*cos(y)",
    (2, 2): "cos(x)*cos(y) - 1",
}


class RigError(RuntimeError):
    """The object is not a Cadence rig, or the rig is incomplete (e.g. its head mesh was deleted)."""


# ---------------------------------------------------------------------------------- building
def _bone_length(model: HeadModel) -> float:
    extent = float(np.ptp(model.v_template, axis=0).max())
    return max(0.1 * extent, 1e-3)


def _build_mesh(model: HeadModel, name: str) -> bpy.types.Mesh:
    V, F = model.n_vertices, len(model.faces)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(V)
    mesh.vertices.foreach_set("co", model.v_template.astype(np.float32).ravel())
    mesh.loops.add(3 * F)
    mesh.loops.foreach_set("vertex_index", model.faces.astype(np.int32).ravel())
    mesh.polygons.add(F)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * F, 3, dtype=np.int32))
    if model.uv is not None and F:
        uv_layer = mesh.uv_layers.new(name="UVMap")
        uv_layer.data.foreach_set("uv", model.uv.astype(np.float32).ravel())
    mesh.polygons.foreach_set("use_smooth", np.ones(F, dtype=bool))
    materials.assign(mesh, model.meta.get("material_groups"))  # before validate(): face ids must hold
    mesh.update(calc_edges=True)
    mesh.validate(verbose=False)  # drops degenerate faces only; vertex order is untouched
    return mesh


def _add_shape_keys(obj: bpy.types.Object, model: HeadModel) -> None:
    obj.shape_key_add(name="Basis", from_mix=False)
    obj.data.shape_keys.use_relative = True
    base = model.v_template
    blocks = [(n, model.shapedirs[:, :, k]) for k, n in enumerate(model.shape_names)]
    blocks += [(n, model.exprdirs[:, :, k]) for k, n in enumerate(model.expr_names)]
    if np.any(model.posedirs):
        for j in range(1, model.n_joints):
            for a in range(3):
                for b in range(3):
                    k = 9 * (j - 1) + 3 * a + b
                    blocks.append((f"pose_{JOINT_NAMES[j]}_{a}{b}", model.posedirs[:, :, k]))
    for name, direction in blocks:
        kb = obj.shape_key_add(name=name, from_mix=False)
        kb.data.foreach_set("co", (base + direction).astype(np.float32).ravel())
        kb.slider_min, kb.slider_max = -SLIDER_RANGE, SLIDER_RANGE
        kb.value = 0.0


def _add_vertex_groups(obj: bpy.types.Object, model: HeadModel) -> None:
    # One add() per distinct weight per joint: skinned heads repeat weights (0/1 plateaus) a lot.
    for j, joint in enumerate(model.joint_names):
        group = obj.vertex_groups.new(name=joint)
        w = model.weights[:, j]
        idx = np.flatnonzero(w > 0)
        if not idx.size:
            continue
        values, inverse = np.unique(w[idx].astype(np.float32), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(values) + 1))
        sorted_idx = idx[order]
        for u, value in enumerate(values.tolist()):
            group.add(sorted_idx[bounds[u]:bounds[u + 1]].tolist(), value, "REPLACE")


def _add_corrective_drivers(mesh_obj: bpy.types.Object, rig: bpy.types.Object) -> None:
    blocks = mesh_obj.data.shape_keys.key_blocks
    for joint in JOINT_NAMES[1:]:
        for (a, b), expr in _CORRECTIVE_EXPR.items():
            kb = blocks.get(f"pose_{joint}_{a}{b}")
            if kb is None:
                continue
            fcurve = kb.driver_add("value")
            for mod in list(fcurve.modifiers):  # keep the driver output exact (value = expression)
                fcurve.modifiers.remove(mod)
            drv = fcurve.driver
            drv.type = "SCRIPTED"
            for i, axis in enumerate("xyz"):
                if axis not in expr:
                    continue
                var = drv.variables.new()
                var.name, var.type = axis, "SINGLE_PROP"
                var.targets[0].id_type = "OBJECT"
                var.targets[0].id = rig
                var.targets[0].data_path = f'pose.bones["{joint}"].rotation_euler[{i}]'
            drv.expression = expr


def _build_bones(rig: bpy.types.Object, model: HeadModel, joints: np.ndarray, context: bpy.types.Context) -> None:
    length = _bone_length(model)
    with _edit_mode(rig, context):
        edit_bones = rig.data.edit_bones
        made = []
        for j, name in enumerate(model.joint_names):
            eb = edit_bones.new(name)
            eb.head = joints[j]
            eb.tail = joints[j] + np.array([0.0, length, 0.0])
            eb.roll = 0.0
            eb.use_connect = False
            eb.use_deform = True
            if model.parents[j] >= 0:
                eb.parent = made[model.parents[j]]
            made.append(eb)
    for pb in rig.pose.bones:
        pb.rotation_mode = "XYZ"


def build_rig(
    model: HeadModel, context: bpy.types.Context, name: str | None = None, model_file: str = ""
) -> bpy.types.Object:
    """Build the rig for ``model`` in the active collection; return the armature (selected, active).

    ``model_file``: a cached `.npz` of this exact model; empty = cache it now under heads/<hash>.npz.
    On failure nothing is left behind.
    """
    name = name or model.name or "Cadence Head"
    created: list = []
    if context.mode != "OBJECT" and context.view_layer.objects.active is not None:
        bpy.ops.object.mode_set(mode="OBJECT")
    try:
        arm = bpy.data.armatures.new(name)
        created.append(arm)
        arm.display_type = "STICK"
        rig = bpy.data.objects.new(name, arm)
        created.append(rig)
        collection = _target_collection(context)
        collection.objects.link(rig)
        rig.rotation_mode = "XYZ"
        rig.rotation_euler = (np.pi / 2, 0.0, 0.0)
        rig.show_in_front = True

        mesh = _build_mesh(model, f"{name} Mesh")
        created.append(mesh)
        head = bpy.data.objects.new(f"{name} Mesh", mesh)
        created.append(head)
        collection.objects.link(head)
        head.parent = rig
        head.parent_type = "OBJECT"
        head.matrix_parent_inverse.identity()

        _build_bones(rig, model, model.rest_joints(), context)
        _add_shape_keys(head, model)
        _add_vertex_groups(head, model)
        mod = head.modifiers.new("Armature", "ARMATURE")
        mod.object = rig
        mod.use_vertex_groups = True
        mod.use_bone_envelopes = False
        mod.use_deform_preserve_volume = False
        mod.use_multi_modifier = False
        if head.data.shape_keys.key_blocks.find(f"pose_{JOINT_NAMES[1]}_00") >= 0:
            _add_corrective_drivers(head, rig)

        jsd = np.einsum("jv,vce->jce", model.j_regressor, model.shapedirs)
        content_hash = model.content_hash()
        rig["cadence"] = {
            "version": RIG_VERSION,
            "model_name": model.name,
            "model_source": model.source,
            "model_hash": content_hash,
            "model_file": model_file or head_cache.cache_model(model, context, content_hash),
            "expr_names": list(model.expr_names),
            "shape_names": list(model.shape_names),
            "joint_names": list(model.joint_names),
            "joint_expr_dirs": model.joint_expr_dirs().ravel().tolist(),
            # Rest joints = joint_rest + joint_shape_dirs @ shape: apply_identity needs no model file.
            "joint_rest": model.rest_joints().ravel().tolist(),
            "joint_shape_dirs": jsd.ravel().tolist(),
            "shape": [0.0] * model.n_shape,
            "mesh": head.name,
        }
        for ob in context.view_layer.objects:
            ob.select_set(False)
        rig.select_set(True)
        context.view_layer.objects.active = rig
        return rig
    except Exception:
        _remove(created)
        raise


def _target_collection(context: bpy.types.Context) -> bpy.types.Collection:
    """The active collection, unless it is excluded from the view layer (then the scene's own)."""
    collection = context.collection or context.scene.collection

    def excluded(layer_coll, parent_excluded: bool) -> bool | None:  # None: not in this view layer
        here = parent_excluded or layer_coll.exclude
        if layer_coll.collection == collection:
            return here
        for child in layer_coll.children:
            found = excluded(child, here)
            if found is not None:
                return found
        return None

    if excluded(context.view_layer.layer_collection, False) in (None, True):
        return context.scene.collection
    return collection


def _remove(ids: list) -> None:
    for idb in reversed(ids):
        try:
            collection = {
                bpy.types.Object: bpy.data.objects, bpy.types.Mesh: bpy.data.meshes,
                bpy.types.Armature: bpy.data.armatures,
            }[type(idb)]
            collection.remove(idb)
        except (ReferenceError, KeyError, RuntimeError):
            pass


class _edit_mode:
    """Enter edit mode on ``rig`` and put back the previous active object, selection and mode."""

    def __init__(self, rig: bpy.types.Object, context: bpy.types.Context):
        self.rig, self.context = rig, context

    def __enter__(self):
        vl = self.context.view_layer
        self.prev_active = vl.objects.active
        self.prev_mode = self.prev_active.mode if self.prev_active else "OBJECT"
        self.prev_selected = [ob for ob in vl.objects if ob.select_get()]
        self.prev_hidden = self.rig.hide_get()
        self.prev_hide_viewport = self.rig.hide_viewport
        if self.prev_active is not None and self.prev_mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        self.rig.hide_set(False)
        self.rig.hide_viewport = False
        vl.objects.active = self.rig
        bpy.ops.object.mode_set(mode="EDIT")
        return self

    def __exit__(self, *exc):
        vl = self.context.view_layer
        bpy.ops.object.mode_set(mode="OBJECT")
        self.rig.hide_viewport = self.prev_hide_viewport
        self.rig.hide_set(self.prev_hidden)
        for ob in vl.objects:
            ob.select_set(ob in self.prev_selected)
        vl.objects.active = self.prev_active
        if self.prev_active is not None and self.prev_mode != "OBJECT":
            try:
                bpy.ops.object.mode_set(mode=self.prev_mode)
            except RuntimeError:
                pass  # e.g. the previous object can no longer enter that mode
        return False


# ------------------------------------------------------------------------------ finding rigs
def find_rig(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The Cadence rig (armature) of ``obj``: the armature itself, or the head mesh parented to it."""
    if obj is None:
        return None
    if obj.type == "ARMATURE" and "cadence" in obj:
        return obj
    parent = obj.parent
    if obj.type == "MESH" and parent is not None and parent.type == "ARMATURE" and "cadence" in parent:
        return parent
    return None


def rig_mesh(rig: bpy.types.Object) -> bpy.types.Object:
    """The rig's head mesh object (found by the recorded name, else by its Armature modifier)."""
    meta = _meta(rig)
    children = [c for c in rig.children if c.type == "MESH"]
    for child in children:
        if child.name == meta.get("mesh"):
            return child
    for child in children:
        if any(m.type == "ARMATURE" and m.object == rig for m in child.modifiers):
            return child
    raise RigError(f"the Cadence rig {rig.name!r} has no head mesh (was it deleted or unparented?)")


def rig_model_info(rig: bpy.types.Object) -> dict:
    """The rig's metadata as plain Python; ``joint_expr_dirs`` as an array (J, 3, E)."""
    info = {k: (v.to_dict() if hasattr(v, "to_dict") else v.to_list() if hasattr(v, "to_list") else v)
            for k, v in _meta(rig).items()}
    for key in ("expr_names", "shape_names", "joint_names"):
        info[key] = [str(n) for n in info.get(key, [])]
    J, E = len(info["joint_names"]), len(info["expr_names"])
    info["joint_expr_dirs"] = np.asarray(info.get("joint_expr_dirs", []), dtype=np.float64).reshape(J, 3, E)
    info["shape"] = [float(s) for s in info.get("shape", [])]
    return info


def _meta(rig: bpy.types.Object):
    if rig is None or "cadence" not in rig:
        raise RigError(f"{getattr(rig, 'name', rig)!r} is not a Cadence rig")
    return rig["cadence"]
