"""Setting a Cadence rig's identity and pose for the current frame, and the bone locations that keep
the rig exact (the rig contract's compensation for expression-driven joints; the key writer uses
``bone_locations`` for whole takes)."""

from __future__ import annotations

import bpy
import numpy as np

from .build import SLIDER_RANGE, _edit_mode, _meta, rig_mesh, rig_model_info
from .rotations import axis_angle_to_euler_xyz, euler_compatible, euler_xyz_to_matrix


def apply_identity(rig: bpy.types.Object, shape: np.ndarray) -> None:
    """Set the identity: shape-key values and the rest joints (bone heads) of ``shape``."""
    meta = _meta(rig)
    names = [str(n) for n in meta["shape_names"]]
    shape = np.asarray(shape, dtype=np.float64).reshape(-1)
    if shape.size > len(names):
        raise ValueError(f"{shape.size} identity coefficients given, the head has {len(names)}")
    _check_range(shape, "identity")
    shape = np.concatenate([shape, np.zeros(len(names) - shape.size)])
    J = len(meta["joint_names"])
    rest = np.asarray(meta["joint_rest"], dtype=np.float64).reshape(J, 3)
    jsd = np.asarray(meta["joint_shape_dirs"], dtype=np.float64).reshape(J, 3, len(names))
    joints = rest + jsd @ shape
    blocks = rig_mesh(rig).data.shape_keys.key_blocks
    for name, value in zip(names, shape.tolist()):
        blocks[name].value = value
    with _edit_mode(rig, bpy.context):
        for j, name in enumerate(meta["joint_names"]):
            eb = rig.data.edit_bones[name]
            offset = eb.tail - eb.head
            eb.head = joints[j]
            eb.tail = joints[j] + np.asarray(offset)
    meta["shape"] = shape.tolist()


def set_pose(
    rig: bpy.types.Object,
    expression: np.ndarray | None = None,
    pose: np.ndarray | None = None,
    translation: np.ndarray | None = None,
) -> None:
    """Pose the rig for the current frame (None = keep that part as it is).

    ``expression`` (E,), ``pose`` (J, 3) axis-angle local to the parent joint, ``translation`` (3,)
    in model units. Bone locations get the contract's compensation for expression-driven joints.
    """
    info = rig_model_info(rig)
    names, jed = info["expr_names"], info["joint_expr_dirs"]
    J, E = len(info["joint_names"]), len(names)
    bones = [rig.pose.bones[n] for n in info["joint_names"]]
    blocks = rig_mesh(rig).data.shape_keys.key_blocks

    cur_expr = np.array([blocks[n].value for n in names], dtype=np.float64)
    cur_rot = euler_xyz_to_matrix(np.array([tuple(pb.rotation_euler) for pb in bones]))
    if translation is None:  # recover the current translation from the root bone's location
        d0 = jed[0] @ cur_expr
        translation = np.array(bones[0].location) - (np.eye(3) - cur_rot[0]) @ d0

    if expression is not None:
        expression = np.asarray(expression, dtype=np.float64).reshape(-1)
        if expression.size > E:
            raise ValueError(f"{expression.size} expression coefficients given, the head has {E}")
        _check_range(expression, "expression")
        cur_expr = np.concatenate([expression, np.zeros(E - expression.size)])
        for n, value in zip(names, cur_expr.tolist()):
            blocks[n].value = value
    if pose is not None:
        pose = np.asarray(pose, dtype=np.float64).reshape(J, 3)
        current = np.array([tuple(pb.rotation_euler) for pb in bones])
        eul = euler_compatible(axis_angle_to_euler_xyz(pose), current)
        for pb, e in zip(bones, eul):
            pb.rotation_euler = e.tolist()
        cur_rot = euler_xyz_to_matrix(eul)
    locs = bone_locations(jed, cur_expr, cur_rot, np.asarray(translation, dtype=np.float64).reshape(3))
    for pb, loc in zip(bones, locs):
        pb.location = loc.tolist()


def _check_range(coeffs: np.ndarray, what: str) -> None:
    # Shape-key values are clamped to the slider range: refuse rather than silently clip.
    if not np.all(np.isfinite(coeffs)):
        raise ValueError(f"{what} coefficients must be finite numbers")
    if coeffs.size and np.abs(coeffs).max() > SLIDER_RANGE:
        raise ValueError(f"{what} coefficients must lie within +-{SLIDER_RANGE:g} (the shape-key slider range)")


def bone_locations(joint_expr_dirs: np.ndarray, expression: np.ndarray, rotations: np.ndarray,
                   translation: np.ndarray) -> np.ndarray:
    """Pose-bone locations (..., J, 3) that keep the rig exact: (I - R_j) d_j, plus t on the root.

    Broadcasts over leading (time) axes: expression (..., E), rotations (..., J, 3, 3),
    translation (..., 3); d_j = joint_expr_dirs[j] @ expression.
    """
    d = np.einsum("jce,...e->...jc", joint_expr_dirs, expression)
    locs = d - np.einsum("...jab,...jb->...ja", rotations, d)
    locs[..., 0, :] += translation
    return locs
