"""Batched Levenberg-Marquardt for the landmark fit: per frame head pose + jaw + eyes + expression, per clip shape.

Everything is numpy float64 and batched over frames: the landmark forward pass (landmark_rig.LandmarkRig)
returns, next to the landmarks, each landmark's blended skinning rotation, so the Jacobian is analytic for
translation, head rotation (left perturbation about the root joint), expression and shape (the landmarks are
linear in both for a fixed pose); jaw and eye rotations by a forward difference of their own joint's skinning
(LandmarkRig.joint_jacobian: they are leaves, so no extra forward pass). Each frame solves its own small
normal equations; temporal smoothness couples a frame to its neighbours' current values (a Jacobi sweep per iteration), which is enough for the light smoothing used.
Bounded expression controls (0..1) use an active set: a control at a bound whose gradient points outward
is held there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..heads.head_model import rodrigues
from .landmark_rig import LandmarkRig


def log_rot(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3) (angles below pi, as head poses are)."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos)
    vee = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s = np.sin(theta)
    scale = np.where(s < 1e-9, 0.5, theta / (2 * np.where(s < 1e-9, 1.0, s)))
    return vee * scale[..., None]


def skew(v: np.ndarray) -> np.ndarray:
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([z, -w, y, w, z, -x, -y, x, z], -1).reshape(v.shape[:-1] + (3, 3))


def view_angles(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) in radians of head -> camera rotations (..., 3, 3): where the face's +Z points in the camera."""
    f = R[..., :, 2]
    return np.arctan2(f[..., 0], f[..., 2]), np.arctan2(f[..., 1], np.hypot(f[..., 0], f[..., 2]))


@dataclass
class Camera:
    focal: float
    position: np.ndarray
    cx: float
    cy: float

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (..., 2) and their Jacobian wrt the model-space point (..., 2, 3)."""
        d = X - self.position
        z = np.maximum(-d[..., 2], 1e-4)
        f = self.focal
        uv = np.stack([self.cx + f * d[..., 0] / z, self.cy - f * d[..., 1] / z], -1)
        zero = np.zeros_like(z)
        jac = np.stack([np.stack([f / z, zero, f * d[..., 0] / z**2], -1),
                        np.stack([zero, -f / z, -f * d[..., 1] / z**2], -1)], -2)
        return uv, jac


@dataclass
class State:
    rot: np.ndarray  # (T, 3) root axis-angle
    trans: np.ndarray  # (T, 3)
    jaw: np.ndarray  # (T, 3)
    eyes: np.ndarray  # (T, 2, 2) pitch, yaw per eye
    expr: np.ndarray  # (T, E)
    shape: np.ndarray  # (S,)

    def copy(self) -> State:
        return State(*(a.copy() for a in (self.rot, self.trans, self.jaw, self.eyes, self.expr, self.shape)))

    def take(self, idx: np.ndarray) -> State:
        return State(self.rot[idx], self.trans[idx], self.jaw[idx], self.eyes[idx], self.expr[idx], self.shape)


@dataclass
class Problem:
    rig: LandmarkRig
    n_joints: int
    jaw_idx: int | None
    eye_idx: list[int]
    obs: np.ndarray  # (T, L, 2) pixels
    weight: np.ndarray  # (L,) per landmark weights (already include the normalisation)
    valid: np.ndarray  # (T,) 1.0 where the frame has a face
    bounded: bool
    expr_prior: float | np.ndarray  # scalar, or (E,) per expression
    jaw_prior: float
    eye_prior: float = 1e-3
    smooth: float = 0.0  # first-difference weight (rot, trans x 10, jaw, expr x 0.1)
    fit_eyes: bool = False
    fit_expr: bool = True
    frame_weight: np.ndarray | None = None  # (T, L) per frame multipliers of ``weight`` (visibility), optional
    hold_rigid: bool = False  # keep head rotation + translation where they are (a jaw / mouth-only pass)
    expr_free: np.ndarray | None = None  # (E,) bool: the expressions the solve may move (default: all)
    contact: object | None = None  # lip_contact.ContactTerm: the lips' opening where the video shows them touching

    def frames(self, idx: np.ndarray) -> Problem:
        """The problem restricted to the frames ``idx``."""
        fw = None if self.frame_weight is None else self.frame_weight[idx]
        contact = None if self.contact is None else self.contact.frames(idx)
        return Problem(**{**self.__dict__, "obs": self.obs[idx], "valid": self.valid[idx], "frame_weight": fw,
                          "contact": contact})

    def pose(self, s: State, jaw: np.ndarray | None = None, eyes: np.ndarray | None = None) -> np.ndarray:
        T = len(s.rot)
        pose = np.zeros((T, self.n_joints, 3))
        pose[:, 0] = s.rot
        if self.jaw_idx is not None:
            pose[:, self.jaw_idx] = s.jaw if jaw is None else jaw
        if self.fit_eyes and len(self.eye_idx) == 2:
            e = s.eyes if eyes is None else eyes
            for k, j in enumerate(self.eye_idx):
                pose[:, j, :2] = e[:, k]
        return pose

    def residual(self, s: State, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        X, A, root = self.rig.forward(s.shape, s.expr, self.pose(s), s.trans)
        uv, P = cam.project(X)
        w = self.weight[None] if self.frame_weight is None else self.weight[None] * self.frame_weight
        sw = np.sqrt(w)[:, :, None] * self.valid[:, None, None]
        return (uv - self.obs) * sw, X, A, (P, root, sw)

    def prior_cost(self, s: State) -> np.ndarray:
        c = ((self.expr_prior * s.expr**2).sum(1) + self.jaw_prior * ((s.jaw[:, 1:] ** 2).sum(1)
             + np.minimum(s.jaw[:, 0], 0.0) ** 2))
        if self.fit_eyes:
            c = c + self.eye_prior * (s.eyes**2).sum((1, 2))
        if self.contact is not None:
            c = c + self.contact.cost(s.shape, s.expr, s.jaw)
        return c


def _neighbour_pull(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (T, ...) and curvature (T,) of sum (x_t - x_{t-1})^2 with the neighbours held."""
    g = np.zeros_like(x)
    n = np.zeros(len(x))
    if len(x) > 1:
        g[1:] += x[1:] - x[:-1]
        g[:-1] += x[:-1] - x[1:]
        n[1:] += 1
        n[:-1] += 1
    return g, n


def solve(prob: Problem, s: State, cam: Camera, iters: int, rigid_only: bool = False) -> tuple[State, np.ndarray]:
    """``iters`` LM iterations on all frames at once; returns the new state and per-frame data cost."""
    T = len(s.rot)
    E = s.expr.shape[1] if (prob.fit_expr and not rigid_only) else 0
    n_jaw = 0 if (rigid_only or prob.jaw_idx is None) else 3
    n_eye = 4 if (prob.fit_eyes and not rigid_only and len(prob.eye_idx) == 2) else 0
    P = 6 + n_jaw + n_eye + E
    mu = np.full(T, 1e-3)
    eye_p = np.eye(P)

    def total(st: State, r: np.ndarray, ref: State) -> np.ndarray:
        c = (r**2).sum((1, 2)) + prob.prior_cost(st)
        if prob.smooth and T > 1:
            for a, b, k in ((st.rot, ref.rot, 1.0), (st.trans, ref.trans, 100.0), (st.jaw, ref.jaw, 1.0),
                            (st.expr, ref.expr, 0.01)):
                d = np.zeros(T)
                d[1:] += ((a[1:] - b[:-1]) ** 2).sum(1)
                d[:-1] += ((a[:-1] - b[1:]) ** 2).sum(1)
                c = c + prob.smooth * k * d
        return c

    r, X, A, (Pj, root, sw) = prob.residual(s, cam)
    cache = prob.rig._last
    cost = total(s, r, s)
    for _ in range(iters):
        blocks = [-skew(X - root[:, None, :]), np.eye(3)]
        h = 1e-4
        if n_jaw:
            fast = prob.rig.joint_jacobian(prob.jaw_idx, (0, 1, 2), h, cache)
            for k in range(3):
                if fast is not None:
                    blocks.append(fast[k][..., None])
                    continue
                jaw = s.jaw.copy()
                jaw[:, k] += h
                Xk = prob.rig.forward(s.shape, s.expr, prob.pose(s, jaw=jaw), s.trans)[0]
                blocks.append(((Xk - X) / h)[..., None])
        if n_eye:
            for e in range(2):
                fast = prob.rig.joint_jacobian(prob.eye_idx[e], (0, 1), h, cache)
                for k in range(2):
                    if fast is not None:
                        blocks.append(fast[k][..., None])
                        continue
                    eyes = s.eyes.copy()
                    eyes[:, e, k] += h
                    Xk = prob.rig.forward(s.shape, s.expr, prob.pose(s, eyes=eyes), s.trans)[0]
                    blocks.append(((Xk - X) / h)[..., None])
        Jx = np.concatenate([np.broadcast_to(b, X.shape + (b.shape[-1],)) for b in blocks], -1)  # (T, L, 3, P-E)
        J = Pj @ Jx  # (T, L, 2, P-E)
        if E:  # (Pj A) ed, one GEMM per landmark over all frames (not T*L tiny products): the fit's hot spot
            L = X.shape[1]
            PA = (Pj @ A).transpose(1, 0, 2, 3).reshape(L, T * 2, 3)
            J = np.concatenate([J, (PA @ prob.rig.ed_l).reshape(L, T, 2, E).transpose(1, 0, 2, 3)], -1)
        J = J * sw[..., None]  # (T, L, 2, P)
        J = J.reshape(T, -1, P)
        rr = r.reshape(T, -1)
        Jt = J.transpose(0, 2, 1)
        H = Jt @ J  # batched BLAS: far faster than einsum here
        g = (Jt @ rr[..., None])[..., 0]
        if prob.contact is not None and (n_jaw or E):  # lip contact: rows in the jaw and the expressions only
            rc, dj, de = prob.contact.terms(s.shape, s.expr, s.jaw)
            Jc = np.zeros(rc.shape + (P,))
            if n_jaw and dj is not None:
                Jc[:, :, 6:9] = dj
            if E:
                Jc[:, :, P - E:] = de
            Jct = Jc.transpose(0, 2, 1)
            H = H + Jct @ Jc
            g = g + (Jct @ rc[..., None])[..., 0]
        # Priors (on the parameters' current values).
        o = 6
        if n_jaw:
            jp = prob.jaw_prior
            H[:, o + 1, o + 1] += jp
            H[:, o + 2, o + 2] += jp
            g[:, o + 1:o + 3] += jp * s.jaw[:, 1:]
            neg = s.jaw[:, 0] < 0
            H[neg, o, o] += jp
            g[neg, o] += jp * s.jaw[neg, 0]
            o += 3
        if n_eye:
            H[:, o:o + 4, o:o + 4] += prob.eye_prior * np.eye(4)
            g[:, o:o + 4] += prob.eye_prior * s.eyes.reshape(T, 4)
            o += 4
        if E:
            H[:, o:, o:] += np.diag(np.broadcast_to(prob.expr_prior, (E,)))
            g[:, o:] += prob.expr_prior * s.expr
        if prob.smooth and T > 1:
            segs = [(0, s.rot, 1.0), (3, s.trans, 100.0)]
            if n_jaw:
                segs.append((6, s.jaw, 1.0))
            if E:
                segs.append((6 + n_jaw + n_eye, s.expr, 0.01))
            for start, x, k in segs:
                gx, nx = _neighbour_pull(x)
                w = prob.smooth * k
                idx = np.arange(start, start + x.shape[1])
                H[:, idx, idx] += w * nx[:, None]
                g[:, start:start + x.shape[1]] += w * gx
        free = np.ones((T, P), dtype=bool)
        if E and prob.bounded:  # active set: hold controls at a bound that the gradient pushes past
            ex = s.expr
            free[:, P - E:] = ~(((ex <= 1e-9) & (g[:, P - E:] > 0)) | ((ex >= 1 - 1e-9) & (g[:, P - E:] < 0)))
        if prob.hold_rigid:
            free[:, :6] = False
        if E and prob.expr_free is not None:
            free[:, P - E:] &= np.asarray(prob.expr_free, dtype=bool)[None]
        Hd = H + (mu[:, None, None] * np.diagonal(H, axis1=1, axis2=2)[:, None, :] + 1e-9) * eye_p
        mask = free[:, :, None] & free[:, None, :]
        Hd = np.where(mask, Hd, eye_p)
        step = -np.linalg.solve(Hd, np.where(free, g, 0.0)[..., None])[..., 0]
        new = s.copy()
        new.rot = log_rot(rodrigues(step[:, :3]) @ rodrigues(s.rot))
        new.trans = s.trans + step[:, 3:6]
        o = 6
        if n_jaw:
            new.jaw = s.jaw + step[:, o:o + 3]
            o += 3
        if n_eye:
            new.eyes = s.eyes + step[:, o:o + 4].reshape(T, 2, 2)
            o += 4
        if E:
            new.expr = s.expr + step[:, o:]
            if prob.bounded:
                new.expr = np.clip(new.expr, 0.0, 1.0)
        r2, X2, A2, aux2 = prob.residual(new, cam)
        cache2 = prob.rig._last
        cost2 = total(new, r2, s)
        ok = cost2 <= total(s, r, s)
        mu = np.where(ok, np.maximum(mu / 3, 1e-6), mu * 8)
        if not ok.any():
            continue
        def pick(a: np.ndarray, b: np.ndarray, ok: np.ndarray = ok) -> np.ndarray:
            return np.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

        s = State(pick(new.rot, s.rot), pick(new.trans, s.trans), pick(new.jaw, s.jaw), pick(new.eyes, s.eyes),
                  pick(new.expr, s.expr), s.shape)
        r, X, A = pick(r2, r), pick(X2, X), pick(A2, A)
        cache = prob.rig.pick_cache(ok, cache2, cache)
        root = pick(aux2[1], root)
        cost = pick(cost2, cost)
    return s, (r**2).sum((1, 2))


def solve_shape(prob: Problem, s: State, cam: Camera, frames: np.ndarray, prior: float, iters: int = 2) -> np.ndarray:
    """Identity coefficients from ``frames`` with the per-frame parameters held (linear least squares)."""
    sub = s.take(frames)
    sub_prob = prob.frames(frames)
    shape = s.shape.copy()
    for _ in range(iters):
        sub.shape = shape
        r, _X, A, (Pj, _root, sw) = sub_prob.residual(sub, cam)
        J = (Pj @ (A @ prob.rig.sd_l[None])) * sw[..., None]  # (K, L, 2, S)
        J = J.reshape(-1, shape.size)
        H = J.T @ J + prior * np.eye(shape.size)
        g = J.T @ r.reshape(-1) + prior * shape
        shape = shape - np.linalg.solve(H, g)
    return shape
