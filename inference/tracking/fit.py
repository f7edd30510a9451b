"""Fit a head model to tracked 2D landmarks: per clip identity + focal, per frame pose + expression.

Camera (the track contract): pinhole, principal point at the image centre, fixed at ``position`` in the
head MODEL's space (+Y up, +Z out of the face), looking along -Z with +Y up. A model point X projects to
u = cx + f (X - p).x / (p - X).z, v = cy - f (X - p).y / (p - X).z (image y grows downwards).

The fit is batched over all frames in torch (CPU, float64): a PnP solve per frame on rigid points gives
the initial head pose and the focal length (a coarse search), then Adam minimises landmark reprojection
error + priors + temporal smoothness (first and second differences), rigid first, then everything.
Frames without a face have no data term: the smoothness terms interpolate them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..heads.head_model import HeadModel
from . import fit_gn as gn
from . import lip_contact, pose_calibration
from .landmark_rig import LandmarkRig

# MediaPipe face-oval indices: the detector slides these inside the silhouette, so they are down-weighted.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# Points that move little with expression: eye corners, nose bridge/tip, forehead (PnP initialisation).
RIGID = (33, 133, 362, 263, 1, 4, 5, 6, 168, 197, 195, 10, 151, 9, 8, 98, 327, 130, 359, 243, 463)
IRIS = (468, 473)
LIPS_INNER = (13, 14, 78, 308, 82, 312, 87, 317)
EYELIDS = (159, 145, 386, 374, 158, 153, 385, 380, 160, 144, 387, 373)
# Lips (outer + inner contour) and chin: what the jaw pass reads the mouth opening from.
MOUTH = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185, 78, 95, 88,
         178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 152, 175, 199, 200, 148, 377,
         176, 400, 171, 396, 208, 428)
# Expressions that open / close the lips and so trade off against the jaw rotation in a landmark fit.
MOUTH_OPENING = ("mouthLowerDown", "mouthUpperUp", "mouthClose", "mouthFunnel", "mouthShrugUpper", "mouthShrugLower",
                 "mouthRollLower", "mouthRollUpper", "mouthStretch_L", "mouthStretch_R", "jawForward")


class FitError(ValueError):
    """The landmarks cannot be fitted (no embedding, no face in any frame, ...)."""


@dataclass
class FitOptions:
    # LM iterations. On the rendered ground truth, 6 / 4 / 5 full / final / probe iterations gave the same head,
    # jaw and expression figures (to 0.01) as these, in 1.3x the time.
    iters_rigid: int = 4  # head pose only (from the PnP start)
    iters_full: int = 4  # pose + jaw + eyes + expression
    iters_final: int = 3  # everything again, with temporal smoothness
    iters_probe: int = 3  # per focal candidate, on the probe frames
    w_oval: float = 0.15
    w_lips: float = 2.0
    w_eyelids: float = 2.0
    shape_prior: float = 3e-3  # identity coefficients are in units of the basis' standard deviation
    shape_frames: int = 24  # frames the identity is solved from
    expr_prior: float = 1e-4  # bounded (0..1) controls: a light pull to neutral
    expr_prior_generic: float = 1e-3  # FLAME-style components: L2
    # On jaw y/z (sideways / twist) and on negative (closing past rest) opening. Firm: with a weak prior the
    # fit explains mouth-shape residuals with spurious jaw twist (1.3-1.6 deg mean on the rendered ground truth).
    jaw_prior: float = 1e-1
    # On each eye's pitch / yaw (rad^2). At 1e-3 the irises moved 6-12 % as far as a real person's; at 1e-6
    # the head's iris follows the video's (fixture clip a, iris offset in eye widths: slope 0.91 / 0.62, r 0.95 /
    # 0.70). Coupling the eyes (a prior on their difference) lowered both figures on the fixture clips.
    eye_prior: float = 1e-6
    # First differences between frames (rotation in rad; translation x 100). Per-frame (static) detections
    # jitter more than MediaPipe's tracking mode: on the rendered ground truth 2e-3 -> 1e-2 took the corrected
    # head error 1.90 -> 1.76 deg.
    smooth: float = 1e-2
    focal_candidates: tuple[float, ...] = (0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0)  # x max(w, h)
    focal_probe_frames: int = 16
    prior_fov_deg: float = 50.0  # the focal prior's centre: a typical webcam / phone field of view
    calib_sigma: float = 0.01  # down-weights landmarks whose calibration error (x face width) exceeds this
    focal_prior: float = 2e-6  # per (log focal)^2, against the mean per-frame landmark cost
    # Per frame, each landmark's weight x (its surface's facing of the camera / its facing in a frontal view)
    # ** this power, from the first pass's pose. Off: on the rendered ground truth (power 2) it cut the jaw error
    # 4.5 -> 4.0 deg but raised the head rotation error 4.2 -> 4.5 deg and blurred eyeBlink_L (r 0.60 -> 0.17).
    visibility_power: float = 0.0
    # Jaw pass (after everything): LM iterations with the mouth-opening expressions (MOUTH_OPENING) pulled to 0 by
    # ``jaw_pass_prior``, so the jaw rotation takes the opening they absorbed (MediaPipe's chin under-follows it).
    # On the rendered ground truth: jaw error 3.56 -> 2.77 deg (slope of the read opening 0.5 -> 0.66 without the
    # detector basis), head 3.64 -> 3.74 deg. Saturates from a prior of 3e-3; "mouth only" (pose held, lips +
    # chin landmarks) helped less (4.4 -> 4.2 deg vs 3.8).
    jaw_pass_iters: int = 4
    jaw_pass_prior: float = 1e-2
    jaw_pass_mouth_only: bool = False  # head pose held, only lips + chin landmarks, only mouth expressions move
    # Use a calibrated embedding's measured detector response to each expression and to the jaw
    # (meta[landmark_rig.EXPR_DRIFT_KEY]) in the landmark basis. On the rendered ground truth: head 4.76 -> 3.64 deg,
    # smile r 0.36/0.57 -> 0.56/0.65 (expression no longer leaks into the head pose as much).
    detector_basis: bool = True
    # Undo the detector's measured bias on the head pose (a calibrated embedding's
    # meta[pose_calibration.CORRECTION_KEY], learned by tracking renders with known poses). On the rendered
    # ground truth (known focal): head 3.4 -> 1.8 deg.
    pose_correction: bool = True
    # Scale a searched focal length by the head's calibrated ratio (meta[pose_calibration.CORRECTION_KEY]
    # ["focal_ratio"]): the search reads the detector's landmarks as a too short lens. On the rendered ground
    # truth: focal 528 -> 744 px (true 756), head rotation error 2.18 -> 1.87 deg.
    focal_correction: bool = True
    # Lip contact as an observation (lip_contact.py): in frames where the detected inner lips touch, the head's
    # lips are held together by a one-sided residual on their opening, this strong (per face width squared,
    # against the landmark cost per face width squared).
    lip_contact: bool = True
    w_contact: float = 30.0


@dataclass
class FitResult:
    shape: np.ndarray  # (S,)
    expression: np.ndarray  # (T, E)
    jaw: np.ndarray  # (T, 3)
    head_rotation: np.ndarray  # (T, 3) root axis-angle
    head_translation: np.ndarray  # (T, 3)
    focal_px: float
    position: np.ndarray  # (3,) camera position in model space
    rms_px: float  # RMS reprojection error over fitted landmarks of valid frames
    report: dict = field(default_factory=dict)


def is_bounded(head: HeadModel) -> bool:
    """Cadence's default head has semantic 0..1 controls; FLAME-style bases are unbounded."""
    return "cadence-default-head" in (head.source or "") or "cadence-default-head" in str(head.meta.get("generator", ""))


_C = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes (x right, y down, z forward) <-> the contract camera


def _weights(head: HeadModel, ids: np.ndarray, opts: FitOptions, fit_eyes: bool) -> np.ndarray:
    w = np.ones(len(ids))
    w[np.isin(ids, FACE_OVAL)] = opts.w_oval
    w[np.isin(ids, LIPS_INNER)] = opts.w_lips
    w[np.isin(ids, EYELIDS)] = opts.w_eyelids
    if not fit_eyes:
        w[np.isin(ids, IRIS)] = 0.0
    # A calibrated embedding knows how rigidly the detector holds each point to the surface across poses.
    rel = np.asarray(head.meta.get("lmk_rms_rel", []), dtype=np.float64)
    if rel.shape == w.shape and opts.calib_sigma > 0:
        w = w / (1.0 + (rel / opts.calib_sigma) ** 2)
    return w


def fit_landmarks(head: HeadModel, obs: np.ndarray, valid: np.ndarray, width: int, height: int,
                  opts: FitOptions | None = None, fit_eyes: bool = False, progress=None,
                  focal_px: float | None = None) -> FitResult:
    """Fit ``head`` to landmarks ``obs`` (T, 478, >=2) in pixels; ``valid`` (T,) marks frames with a face.

    ``focal_px``: the camera's focal length in pixels when known; otherwise it is chosen by a profile
    search (pose + expression fitted on a subset of frames for each candidate) under a weak prior.
    """
    opts = opts or FitOptions()
    if head.lmk_faces is None or head.lmk_scheme != "mediapipe478":
        raise FitError(
            "this head has no landmark embedding: build one (Cadence > Build Landmarks) or load an embedding file"
        )
    if focal_px is not None and not (np.isfinite(focal_px) and focal_px > 0):
        raise FitError(f"the focal length must be a positive number of pixels, got {focal_px!r}")
    say = progress or (lambda f: None)
    ids = np.asarray(head.lmk_ids, dtype=np.int64)
    obs = np.asarray(obs, dtype=np.float64)[:, :, :2]
    valid = np.asarray(valid, dtype=bool)
    T = len(obs)
    if T == 0 or not valid.any():
        raise FitError("no face was found in any frame of the video")
    obs_l = np.nan_to_num(obs[:, ids])  # (T, L, 2)
    rig = LandmarkRig(head, detector_basis=opts.detector_basis)
    neutral = head.landmarks(head.forward()[0])
    face_px = float(np.median([np.ptp(o[:, 0]) for o in obs_l[valid]]))
    lw = _weights(head, ids, opts, fit_eyes)
    bounded = is_bounded(head)
    names = list(head.joint_names)
    rows = lip_contact.pair_rows(head) if opts.lip_contact and "jaw" in names else None
    touching = lip_contact.seen(obs) * valid
    prob = gn.Problem(
        rig=rig, n_joints=head.n_joints, jaw_idx=names.index("jaw") if "jaw" in names else None,
        eye_idx=[names.index(n) for n in ("eye_L", "eye_R") if n in names], obs=obs_l,
        weight=lw / lw.sum() / max(face_px, 1.0) ** 2, valid=valid.astype(np.float64), bounded=bounded,
        expr_prior=opts.expr_prior if bounded else opts.expr_prior_generic, jaw_prior=opts.jaw_prior,
        eye_prior=opts.eye_prior, fit_eyes=fit_eyes)
    if rows is not None and touching.any():
        prob.contact = lip_contact.ContactTerm(lip_contact.ContactRig(head, rows), opts.w_contact * touching)
    E, S = head.n_expr, head.n_shape
    J0 = head.rest_joints()[0]
    frames = np.flatnonzero(valid)

    def init(focal: float, idx: np.ndarray) -> tuple[gn.State, np.ndarray]:
        rv, tv = _pnp(neutral, ids, obs_l, idx, width, height, focal)
        R0 = np.einsum("ab,tbc->tac", _C, gn.rodrigues(rv))
        trans = (tv @ _C.T) - J0 + np.einsum("tab,b->ta", R0, J0)
        position = -trans.mean(0)
        n = len(idx)
        st = gn.State(_unwrap_aa(gn.log_rot(R0)), trans + position, np.zeros((n, 3)), np.zeros((n, 2, 2)),
                      np.zeros((n, E)), np.zeros(S))
        return st, position

    def run(focal: float, idx: np.ndarray, sub: gn.Problem, rigid: int, full: int
            ) -> tuple[gn.State, gn.Camera, np.ndarray]:
        st, position = init(focal, idx)
        cam = gn.Camera(focal, position, width / 2, height / 2)
        st, _ = gn.solve(sub, st, cam, rigid, rigid_only=True)
        st, cost = gn.solve(sub, st, cam, full)
        return st, cam, cost

    # Focal: profile search over a log grid on a subset of frames, refined by a parabola in log f.
    scale = float(max(width, height))
    f0 = 0.5 * scale / np.tan(np.radians(opts.prior_fov_deg) / 2)
    report = {"face_width_px": face_px, "bounded_expression": bounded,
              "lip_contact_frames": int((touching >= 0.5).sum()), "lip_contact_fitted": prob.contact is not None}
    if focal_px is None:
        probe = frames[np.linspace(0, len(frames) - 1, min(len(frames), opts.focal_probe_frames)).round().astype(int)]
        sub = prob.frames(probe)
        sub.fit_eyes = False
        logs = np.log(np.asarray(opts.focal_candidates) * scale)
        prof = []
        for k, lf in enumerate(logs):
            _st, _cam, cost = run(float(np.exp(lf)), probe, sub, 3, opts.iters_probe)
            prof.append(cost.mean() + opts.focal_prior * (lf - np.log(f0)) ** 2)
            say(0.3 * (k + 1) / len(logs))
        k = int(np.argmin(prof))
        focal = float(np.exp(logs[k]))
        if 0 < k < len(logs) - 1:
            a, b, c = prof[k - 1], prof[k], prof[k + 1]
            h = logs[k + 1] - logs[k]
            den = a - 2 * b + c
            if den > 0:
                focal = float(np.exp(logs[k] + 0.5 * h * (a - c) / den))
        report["focal_profile"] = {f"{np.exp(lf):.0f}": float(v) for lf, v in zip(logs, prof)}
        ratio = pose_calibration.focal_scale(head.meta) if opts.focal_correction else None
        report["focal_searched_px"] = focal
        if ratio is not None:
            focal *= ratio
        report["focal_ratio"] = ratio
    else:
        focal = float(focal_px)

    # All frames: rigid, then everything; identity from a subset; then everything with smoothness.
    prob.smooth = 0.0
    sub_prob = _subset(prob, frames, valid)
    st, cam, _ = run(focal, frames, sub_prob, opts.iters_rigid, opts.iters_full)
    if opts.visibility_power > 0:
        vis = np.ones((T, len(ids)))
        vis[frames] = _visibility(head, rig, st, cam, opts.visibility_power)
        prob.frame_weight = vis
        sub_prob = _subset(prob, frames, valid)
        st, _ = gn.solve(sub_prob, st, cam, opts.iters_full)
    say(0.6)
    if S:
        k = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), opts.shape_frames)).round().astype(int))
        st.shape = gn.solve_shape(sub_prob, st, cam, k, opts.shape_prior)
        st, _ = gn.solve(sub_prob, st, cam, opts.iters_full)
    st = _expand(st, frames, T) if not valid.all() else st
    prob.smooth = opts.smooth
    st, _ = gn.solve(prob, st, cam, opts.iters_final)
    if opts.jaw_pass_iters > 0 and prob.jaw_idx is not None:
        st = _jaw_pass(head, prob, st, cam, opts)
        report["jaw_pass"] = True
    say(1.0)

    r, *_ = prob.residual(st, cam)
    rot, trans = st.rot, st.trans
    arm = neutral.mean(0) - J0  # root joint (the neck) -> face centre
    prox = pose_calibration.proximity(head, st.rot, st.trans, float(cam.position[2]))
    fixed = pose_calibration.correct(head, st.rot, st.jaw, st.expr, prox) if opts.pose_correction else None
    if fixed is not None:  # after the residual: rms_px reports how well the landmarks were fitted
        rot = _unwrap_aa(fixed)
        # Turned about the root joint, the face would move: keep the face's centre where it was seen.
        trans = st.trans + np.einsum("tab,b->ta", gn.rodrigues(st.rot) - gn.rodrigues(rot), arm)
    report["pose_corrected"] = fixed is not None
    rel = pose_calibration.depth_error(head, st.rot, st.jaw, st.expr, prox) if opts.pose_correction else None
    if rel is not None:  # slide the face along its line of sight to the depth the calibration expects
        centre = np.einsum("tab,b->ta", gn.rodrigues(rot), arm) + J0 + trans
        trans = trans + (centre - cam.position) * (1.0 / (1.0 + rel[:, None]) - 1.0)
    report["depth_corrected"] = rel is not None
    report["proximity"] = float(np.median(prox))  # face width / distance: the camera's perspective
    px = np.sqrt((r**2).sum(2) / np.maximum(prob.weight, 1e-30)[None])  # unweighted pixel error per landmark
    rms = float(np.sqrt((px[valid][:, lw > 0] ** 2).mean()))
    shift = trans.mean(0)  # keep the head near the origin: move camera and head together
    result = FitResult(shape=st.shape, expression=st.expr, jaw=st.jaw, head_rotation=rot,
                       head_translation=trans - shift, focal_px=focal, position=cam.position - shift, rms_px=rms,
                       report=report)
    if fit_eyes:
        eyes = np.zeros((T, 2, 3))
        eyes[:, :, :2] = st.eyes
        result.report["eyes"] = eyes
    return result


def steady_depth(head: HeadModel, fit: FitResult, sigma_frames: float) -> None:
    """Low-pass the head's distance from the camera over consecutive frames (in place), sliding the head
    along the line of sight through its root joint, so where it is seen in the image does not change.

    A monocular face's depth is seen only through its size, the weakest cue in the fit: frame to frame it
    jittered ~0.8 mm on the rendered ground truth of tests/test_personalize.py (12x the truth's speed; the
    per-frame depth correction adds half of it) and a persona learnt from that track learnt the jitter. A head's
    real distance changes slowly. Sigma (track.DEPTH_SIGMA_S) 0.08 / 0.10 / 0.16 s: that persona's style distance
    0.60 (none) -> 0.52 / 0.47 / 0.37 of generic motion's (the test wants <= 0.5); on the real fixture clips the
    leave-one-out persona's FD full 0.63 (none) -> 0.73 / 0.74 / 0.76 of generic's (the test wants < 0.75: motion
    matching had been replaying the tracked jitter the generic motion cannot have).
    (The root, not the face centre: the centre's distance also moves with the head's pitch.)
    """
    if sigma_frames <= 0 or len(fit.head_translation) < 3:
        return
    from scipy.ndimage import gaussian_filter1d

    ray = head.rest_joints()[0] + fit.head_translation - fit.position
    dist = np.linalg.norm(ray, axis=1)
    steady = np.exp(gaussian_filter1d(np.log(dist), float(sigma_frames), mode="nearest"))
    fit.head_translation = fit.head_translation + ray * (steady / dist - 1.0)[:, None]


def _jaw_pass(head: HeadModel, prob: gn.Problem, st: gn.State, cam: gn.Camera, opts: FitOptions) -> gn.State:
    """Refit with the mouth-opening expressions penalised towards 0 (see FitOptions.jaw_pass_iters)."""
    names = list(head.expr_names)
    opening = np.isin(names, MOUTH_OPENING)
    if not opening.any():
        return st
    prior = np.broadcast_to(np.asarray(prob.expr_prior, dtype=np.float64), (len(names),)).copy()
    prior[opening] += opts.jaw_pass_prior
    jp = gn.Problem(**{**prob.__dict__, "expr_prior": prior})
    if opts.jaw_pass_mouth_only:
        ids = np.asarray(head.lmk_ids)
        fw = np.broadcast_to(np.isin(ids, MOUTH).astype(np.float64), prob.obs.shape[:2])
        jp.frame_weight = fw if prob.frame_weight is None else prob.frame_weight * fw
        jp.hold_rigid = True
        jp.fit_eyes = False
        jp.expr_free = np.array([n.startswith(("mouth", "jaw", "cheek")) for n in names])
    st, _ = gn.solve(jp, st, cam, opts.jaw_pass_iters)
    return st


def _visibility(head: HeadModel, rig: LandmarkRig, st: gn.State, cam: gn.Camera, power: float) -> np.ndarray:
    """(T, L) in [0, 1]: how squarely each landmark's triangle faces the camera at the state's head pose,
    relative to a frontal view of the same point (so points the tracker always sees obliquely keep their
    weight), raised to ``power``."""
    tri = head.v_template[head.faces[head.lmk_faces]]  # (L, 3, 3)
    n0 = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n0 /= np.maximum(np.linalg.norm(n0, axis=1, keepdims=True), 1e-12)
    front = np.clip(n0[:, 2], 0.05, None)  # facing of the point when the head looks into the camera (+Z)
    R = gn.rodrigues(st.rot)  # (T, 3, 3)
    X, _A, _root = rig.forward(st.shape, st.expr, np.zeros((len(st.rot), head.n_joints, 3)), np.zeros_like(st.trans))
    Xw = np.einsum("tab,tlb->tla", R, X) + st.trans[:, None]
    view = cam.position - Xw
    view /= np.maximum(np.linalg.norm(view, axis=2, keepdims=True), 1e-12)
    facing = np.einsum("tab,lb,tla->tl", R, n0, view)
    return np.clip(facing / front, 0.0, 1.0) ** power


def _subset(prob: gn.Problem, frames: np.ndarray, valid: np.ndarray) -> gn.Problem:
    """The problem restricted to the frames with a face (all of them when every frame has one)."""
    if valid.all():
        return prob
    return prob.frames(frames)


def _expand(st: gn.State, frames: np.ndarray, T: int) -> gn.State:
    """Per-frame parameters of the frames with a face -> all frames, linearly interpolated (held at the ends)."""
    def interp(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(len(a), -1)
        out = np.stack([np.interp(np.arange(T), frames, flat[:, k]) for k in range(flat.shape[1])], 1)
        return out.reshape((T,) + a.shape[1:])

    return gn.State(interp(st.rot), interp(st.trans), interp(st.jaw), interp(st.eyes), interp(st.expr), st.shape)


def _pnp(neutral: np.ndarray, ids: np.ndarray, obs: np.ndarray, frames: np.ndarray, w: int, h: int,
         focal: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV (rvec, tvec) per listed frame from the rigid landmarks, each frame seeded by the previous one."""
    import cv2  # noqa: PLC0415

    sel = np.isin(ids, RIGID)
    if sel.sum() < 6:
        sel = ~np.isin(ids, FACE_OVAL)
    obj = neutral[sel].astype(np.float64)
    K = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    rv = np.zeros((len(frames), 3))
    tv = np.zeros((len(frames), 3))
    guess = None
    for n, t in enumerate(frames):
        img = obs[t][sel].astype(np.float64)
        if guess is None:
            _ok, r, tt = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_EPNP)
        else:
            r, tt = guess[0].copy(), guess[1].copy()
        _ok, r, tt = cv2.solvePnP(obj, img, K, None, r, tt, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        rv[n], tv[n] = r[:, 0], tt[:, 0]
        guess = (r, tt)
    return rv, tv


def _unwrap_aa(aa: np.ndarray) -> np.ndarray:
    """Pick, per frame, the axis-angle representative nearest the previous frame's (continuity for smoothing)."""
    out = aa.copy()
    for t in range(1, len(out)):
        th = np.linalg.norm(out[t])
        if th < 1e-9:
            continue
        alt = out[t] * (1 - 2 * np.pi / th)
        if np.linalg.norm(alt - out[t - 1]) < np.linalg.norm(out[t] - out[t - 1]):
            out[t] = alt
    return out
