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
import torch

from .head_model import HeadModel

# MediaPipe face-oval indices: the detector slides these inside the silhouette, so they are down-weighted.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# Points that move little with expression: eye corners, nose bridge/tip, forehead (PnP initialisation).
RIGID = (33, 133, 362, 263, 1, 4, 5, 6, 168, 197, 195, 10, 151, 9, 8, 98, 327, 130, 359, 243, 463)
IRIS = (468, 473)
LIPS_INNER = (13, 14, 78, 308, 82, 312, 87, 317)
EYELIDS = (159, 145, 386, 374, 158, 153, 385, 380, 160, 144, 387, 373)


class FitError(ValueError):
    """The landmarks cannot be fitted (no embedding, no face in any frame, ...)."""


@dataclass
class FitOptions:
    iters_rigid: int = 100
    iters_full: int = 250
    w_oval: float = 0.15
    w_lips: float = 2.0
    w_eyelids: float = 2.0
    shape_prior: float = 3e-3  # identity coefficients are in units of the basis' standard deviation
    expr_prior: float = 1e-4  # bounded (0..1) controls: a light pull to neutral
    expr_prior_generic: float = 1e-3  # FLAME-style components: L2
    jaw_prior: float = 1e-3  # on jaw y/z (sideways / twist), and on negative (closing past rest) opening
    smooth1: float = 2e-3  # first differences, per frame
    smooth2: float = 2e-2  # second differences, per frame
    focal_candidates: tuple[float, ...] = (0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0)  # x max(w, h)


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


def rodrigues_t(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3); smooth at 0 (same formula as head_model.rodrigues)."""
    theta = torch.sqrt((aa * aa).sum(-1, keepdim=True) + 1e-24)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    s = torch.sin(theta)[..., None]
    c = torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=aa.dtype).expand(K.shape)
    return eye + s * K + (1 - c) * (K @ K)


class TorchLandmarks:
    """HeadModel.forward restricted to the landmark triangles' vertices, batched over frames, in torch."""

    def __init__(self, head: HeadModel, dtype: torch.dtype = torch.float64):
        if head.lmk_faces is None or head.lmk_scheme != "mediapipe478":
            raise FitError(
                "this head has no landmark embedding: build one (Cadence > Build Landmarks) or load an embedding file"
            )
        tri = head.faces[head.lmk_faces]  # (L, 3)
        used, local = np.unique(tri, return_inverse=True)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        self.head = head
        self.dtype = dtype
        self.ids = np.asarray(head.lmk_ids, dtype=np.int64)
        self.tri = torch.as_tensor(local.reshape(tri.shape), dtype=torch.long)
        self.bary = t(head.lmk_bary)
        self.v0 = t(head.v_template[used])
        self.sd = t(head.shapedirs[used])
        self.ed = t(head.exprdirs[used])
        self.pd = t(head.posedirs[used])
        self.ed_flat = self.ed.reshape(-1, self.ed.shape[2]).T.contiguous()  # (E, U*3)
        self.pd_flat = self.pd.reshape(-1, self.pd.shape[2]).T.contiguous()
        self.Jed_flat = None
        self.w = t(head.weights[used])
        self.J0 = t(head.j_regressor @ head.v_template)
        self.Jsd = t(np.einsum("jv,vcs->jcs", head.j_regressor, head.shapedirs))
        self.Jed = t(np.einsum("jv,vce->jce", head.j_regressor, head.exprdirs))
        self.Jed_flat = self.Jed.reshape(-1, self.Jed.shape[2]).T.contiguous()  # (E, J*3)
        self.parents = [int(p) for p in head.parents]

    def __call__(self, shape: torch.Tensor, expr: torch.Tensor, pose: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """shape (S,), expr (T, E), pose (T, J, 3), trans (T, 3) -> landmarks (T, L, 3)."""
        T = expr.shape[0]
        U = self.v0.shape[0]
        # Plain 2-D matmuls on flattened bases: far faster on CPU than batched tiny 3x3 products.
        v = (self.v0 + self.sd @ shape).reshape(1, U * 3) + expr @ self.ed_flat  # (T, U*3)
        joints = (self.J0 + self.Jsd @ shape).reshape(1, -1) + expr @ self.Jed_flat
        joints = joints.reshape(T, -1, 3)  # (T, J, 3)
        rots = rodrigues_t(pose)  # (T, J, 3, 3)
        if self.pd.shape[2]:
            feat = (rots[:, 1:] - torch.eye(3, dtype=self.dtype)).reshape(T, -1)
            v = v + feat @ self.pd_flat
        v = v.reshape(T, U, 3)
        world_r, world_t = [], []
        for j, p in enumerate(self.parents):
            if p < 0:
                world_r.append(rots[:, j])
                world_t.append(joints[:, j])
            else:
                world_r.append(world_r[p] @ rots[:, j])
                world_t.append((world_r[p] @ (joints[:, j] - joints[:, p])[..., None])[..., 0] + world_t[p])
        R = torch.stack(world_r, 1)  # (T, J, 3, 3)
        tw = torch.stack(world_t, 1)
        skin_t = tw - (R @ joints[..., None])[..., 0]  # (T, J, 3)
        per_joint = v[:, None] @ R.transpose(-1, -2) + skin_t[:, :, None, :]  # (T, J, U, 3)
        verts = (per_joint * self.w.T[None, :, :, None]).sum(1) + trans[:, None, :]
        tri = verts[:, self.tri]  # (T, L, 3, 3)
        return (self.bary[None, :, :, None] * tri).sum(2)


def project(points: torch.Tensor, focal: torch.Tensor, position: torch.Tensor, cx: float, cy: float) -> torch.Tensor:
    """Model-space points (..., 3) -> pixels (..., 2) for the contract's camera."""
    d = points - position
    depth = (-d[..., 2]).clamp_min(1e-4)
    return torch.stack([cx + focal * d[..., 0] / depth, cy - focal * d[..., 1] / depth], -1)


_C = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes (x right, y down, z forward) <-> the contract camera


def _weights(ids: np.ndarray, opts: FitOptions, fit_eyes: bool) -> np.ndarray:
    w = np.ones(len(ids))
    w[np.isin(ids, FACE_OVAL)] = opts.w_oval
    w[np.isin(ids, LIPS_INNER)] = opts.w_lips
    w[np.isin(ids, EYELIDS)] = opts.w_eyelids
    if not fit_eyes:
        w[np.isin(ids, IRIS)] = 0.0
    return w


def _pnp_init(neutral: np.ndarray, ids: np.ndarray, obs: np.ndarray, valid: np.ndarray, w: int, h: int,
              focal_candidates: tuple[float, ...]) -> tuple[float, np.ndarray, np.ndarray]:
    """Focal (coarse search) and per-frame OpenCV (rvec, tvec) from rigid landmarks; invalid frames interpolated."""
    import cv2  # noqa: PLC0415

    sel = np.isin(ids, RIGID)
    if sel.sum() < 6:
        sel = ~np.isin(ids, FACE_OVAL)
    obj = neutral[sel].astype(np.float64)
    frames = np.flatnonzero(valid)
    probe = frames[np.linspace(0, len(frames) - 1, min(len(frames), 12)).round().astype(int)]

    def solve(f: float, t: int, guess=None):
        K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
        img = obs[t][sel].astype(np.float64)
        if guess is None:
            ok, rv, tv = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_EPNP)
            ok, rv, tv = cv2.solvePnP(obj, img, K, None, rv, tv, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        else:
            ok, rv, tv = cv2.solvePnP(obj, img, K, None, guess[0].copy(), guess[1].copy(), useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        proj, _ = cv2.projectPoints(obj, rv, tv, K, None)
        return rv, tv, float(np.sqrt(((proj[:, 0] - img) ** 2).sum(1).mean()))

    scale = max(w, h)
    errs = [np.median([solve(c * scale, t)[2] for t in probe]) for c in focal_candidates]
    focal = focal_candidates[int(np.argmin(errs))] * scale
    T = len(obs)
    rv = np.zeros((T, 3))
    tv = np.zeros((T, 3))
    guess = None
    for t in frames:
        r, tt, _ = solve(focal, t, guess)
        rv[t], tv[t] = r[:, 0], tt[:, 0]
        guess = (r, tt)
    for arr in (rv, tv):  # frames without a face: linear interpolation (held at the ends)
        for k in range(3):
            arr[:, k] = np.interp(np.arange(T), frames, arr[frames, k])
    return focal, rv, tv


def fit_landmarks(head: HeadModel, obs: np.ndarray, valid: np.ndarray, width: int, height: int,
                  opts: FitOptions | None = None, fit_eyes: bool = False, progress=None) -> FitResult:
    """Fit ``head`` to landmarks ``obs`` (T, 478, >=2) in pixels; ``valid`` (T,) marks frames with a face."""
    opts = opts or FitOptions()
    tl = TorchLandmarks(head)
    obs = np.asarray(obs, dtype=np.float64)[:, :, :2]
    valid = np.asarray(valid, dtype=bool)
    T = len(obs)
    if T == 0 or not valid.any():
        raise FitError("no face was found in any frame of the video")
    obs_l = np.nan_to_num(obs[:, tl.ids])  # (T, L, 2)
    neutral = head.landmarks(head.forward()[0])
    focal0, rv, tv = _pnp_init(neutral, tl.ids, obs_l, valid, width, height, opts.focal_candidates)

    # OpenCV pose -> root rotation / translation for a camera at the origin, then centre the camera.
    R_cv = np.stack([_rodrigues_cv(r) for r in rv])
    R0 = _C @ R_cv
    J0 = head.rest_joints()[0]
    trans = (tv @ _C.T) - J0 + np.einsum("tab,b->ta", R0, J0)
    position = -trans.mean(0)
    trans = trans + position
    aa0 = np.stack([_log_rot(r) for r in R0])
    aa0 = _unwrap_aa(aa0)

    dt = torch.float64
    E, S, J = head.n_expr, head.n_shape, head.n_joints
    bounded = is_bounded(head)
    p_rot = torch.tensor(aa0, dtype=dt, requires_grad=True)
    p_trans = torch.tensor(trans, dtype=dt, requires_grad=True)
    p_logf = torch.tensor(np.log(focal0), dtype=dt, requires_grad=True)
    p_shape = torch.zeros(S, dtype=dt, requires_grad=True)
    p_expr = torch.zeros((T, E), dtype=dt, requires_grad=True)
    p_jaw = torch.zeros((T, 3), dtype=dt, requires_grad=True)
    p_eyes = torch.zeros((T, 2, 2), dtype=dt, requires_grad=fit_eyes)  # pitch, yaw per eye
    pos_t = torch.tensor(position, dtype=dt)
    target = torch.tensor(obs_l, dtype=dt)
    lw = torch.tensor(_weights(tl.ids, opts, fit_eyes), dtype=dt)
    vmask = torch.tensor(valid, dtype=dt)
    face_px = float(np.median([np.ptp(o[:, 0]) for o in obs_l[valid]]))
    norm = 1.0 / max(face_px, 1.0)
    n_valid = float(valid.sum())
    jaw_idx = head.joint_names.index("jaw") if "jaw" in head.joint_names else None
    eye_idx = [head.joint_names.index(n) for n in ("eye_L", "eye_R") if n in head.joint_names]

    def pose_tensor() -> torch.Tensor:
        cols = [p_rot] + [torch.zeros((T, 3), dtype=dt)] * (J - 1)
        if jaw_idx is not None:
            cols[jaw_idx] = p_jaw
        if fit_eyes and len(eye_idx) == 2:
            for k, j in enumerate(eye_idx):
                cols[j] = torch.cat([p_eyes[:, k], torch.zeros((T, 1), dtype=dt)], 1)
        return torch.stack(cols, 1)

    def data_term() -> tuple[torch.Tensor, torch.Tensor]:
        lm = tl(p_shape, p_expr, pose_tensor(), p_trans)
        uv = project(lm, torch.exp(p_logf), pos_t, width / 2, height / 2)
        r2 = ((uv - target) ** 2).sum(-1) * norm**2  # (T, L)
        loss = (r2 * lw).sum(1) @ vmask / (n_valid * lw.sum())
        return loss, r2

    def smooth(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        if x.shape[0] < 3:
            return x.sum() * 0
        d1 = (x[1:] - x[:-1]).pow(2).sum() / T
        d2 = (x[2:] - 2 * x[1:-1] + x[:-2]).pow(2).sum() / T
        return scale * (opts.smooth1 * d1 + opts.smooth2 * d2)

    def run(params: list[dict], iters: int, full: bool, frac0: float, frac1: float) -> None:
        optim = torch.optim.Adam(params)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, iters, eta_min=0.05 * params[0]["lr"])
        for it in range(iters):
            optim.zero_grad()
            loss, _ = data_term()
            # Translation in metres vs rotation in radians: scale so a 1 cm step weighs like ~0.1 rad.
            loss = loss + smooth(p_rot) + smooth(p_trans, 100.0)
            if full:
                loss = loss + smooth(p_jaw) + smooth(p_expr, 0.05) + opts.shape_prior * p_shape.pow(2).sum()
                loss = loss + (opts.expr_prior if bounded else opts.expr_prior_generic) * p_expr.pow(2).sum() / T
                loss = loss + opts.jaw_prior * (p_jaw[:, 1:].pow(2).sum() + torch.relu(-p_jaw[:, 0]).pow(2).sum()) / T
                if fit_eyes:
                    loss = loss + smooth(p_eyes) + 1e-3 * p_eyes.pow(2).sum() / T
            loss.backward()
            optim.step()
            sched.step()
            if full and bounded:
                with torch.no_grad():
                    p_expr.clamp_(0.0, 1.0)
            if progress is not None and it % 25 == 0:
                progress(frac0 + (frac1 - frac0) * it / iters)

    run([{"params": [p_rot], "lr": 0.01}, {"params": [p_trans], "lr": 0.002}, {"params": [p_logf], "lr": 0.01}],
        opts.iters_rigid, False, 0.0, 0.25)
    groups = [{"params": [p_rot], "lr": 0.005}, {"params": [p_trans], "lr": 0.001}, {"params": [p_logf], "lr": 0.005},
              {"params": [p_shape], "lr": 0.03}, {"params": [p_expr], "lr": 0.02}, {"params": [p_jaw], "lr": 0.01}]
    if fit_eyes:
        groups.append({"params": [p_eyes], "lr": 0.01})
    run(groups, opts.iters_full, True, 0.25, 1.0)

    with torch.no_grad():
        _, r2 = data_term()
        used = lw > 0
        rms = float(torch.sqrt(r2[:, used][vmask > 0].mean()) / norm)
        trans_out = p_trans.numpy().copy()
        shift = trans_out.mean(0)  # keep the head near the origin: move camera and head together
        result = FitResult(
            shape=p_shape.numpy().copy(), expression=p_expr.numpy().copy(), jaw=p_jaw.numpy().copy(),
            head_rotation=p_rot.numpy().copy(), head_translation=trans_out - shift,
            focal_px=float(torch.exp(p_logf)), position=position - shift, rms_px=rms,
            report={"focal_init_px": float(focal0), "face_width_px": face_px, "bounded_expression": bounded},
        )
        if fit_eyes:
            eyes = np.zeros((T, 2, 3))
            eyes[:, :, :2] = p_eyes.numpy()
            result.report["eyes"] = eyes
    return result


def _rodrigues_cv(rvec: np.ndarray) -> np.ndarray:
    import cv2  # noqa: PLC0415

    return cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))[0]


def _log_rot(R: np.ndarray) -> np.ndarray:
    import cv2  # noqa: PLC0415

    return cv2.Rodrigues(np.asarray(R, dtype=np.float64))[0][:, 0]


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
