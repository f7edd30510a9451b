"""The head model's forward pass on its landmark triangles only, batched over frames (the landmark fit's model).

``LandmarkRig.forward`` gives the landmarks with each landmark's blended skinning rotation, which makes the
fit's Jacobian analytic for translation, head rotation, expression and shape; ``joint_jacobian`` gives the
jaw's and the eyes' derivatives from their own skinning (they are leaves). A calibrated embedding's measured
detector response to the expressions and the jaw (meta[EXPR_DRIFT_KEY]) can be added to the expression basis.
"""

from __future__ import annotations

import numpy as np

from ..heads.head_model import HeadModel, rodrigues

# How the detector's landmarks follow each expression and the jaw (operators/landmarks.expression_drift):
# {"expr": (L, 3, E) head-space metres per unit expression, "jaw": (L, 3) metres per radian of opening}.
EXPR_DRIFT_KEY = "lmk_expr_drift"


def expr_drift(meta: dict, n_landmarks: int, n_expr: int) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """The calibrated (expression, jaw) detector response, or (None, None) when ``meta`` has none usable."""
    d = meta.get(EXPR_DRIFT_KEY)
    if not isinstance(d, dict):
        return None, None
    e = np.asarray(d.get("expr", []), dtype=np.float64)
    j = np.asarray(d.get("jaw", []), dtype=np.float64)
    if e.shape != (n_landmarks, 3, n_expr) or j.shape != (n_landmarks, 3):
        return None, None
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(j))):
        return None, None
    return e, j


class LandmarkRig:
    """HeadModel.forward on the landmark triangles only, batched over frames, with the blended rotations.

    ``detector_basis``: with a calibrated embedding's meta[EXPR_DRIFT_KEY], each landmark also moves (in head
    space) the way the detector's landmark was seen to move with each expression and with the jaw opening.
    """

    def __init__(self, head: HeadModel, detector_basis: bool = False):
        tri = head.faces[head.lmk_faces]
        used, local = np.unique(tri, return_inverse=True)
        self.tri = local.reshape(tri.shape)
        self.bary = np.asarray(head.lmk_bary, dtype=np.float64)
        self.v0 = head.v_template[used]
        self.sd = head.shapedirs[used]  # (U, 3, S)
        self.ed = head.exprdirs[used]  # (U, 3, E)
        U = len(used)
        self.ed_flat = self.ed.reshape(U * 3, -1).T.copy()
        self.pd_flat = head.posedirs[used].reshape(U * 3, -1).T.copy()
        self.W = head.weights[used]  # (U, J)
        self.J0 = head.j_regressor @ head.v_template
        self.Jsd = np.einsum("jv,vcs->jcs", head.j_regressor, head.shapedirs)
        self.Jed_flat = np.einsum("jv,vce->jce", head.j_regressor, head.exprdirs).reshape(-1, head.n_expr).T.copy()
        self.parents = [int(p) for p in head.parents]
        # Per landmark bases (barycentric blends of the triangle's vertices).
        self.ed_l = np.einsum("lk,lkce->lce", self.bary, self.ed[self.tri])  # (L, 3, E)
        self.sd_l = np.einsum("lk,lkcs->lcs", self.bary, self.sd[self.tri])  # (L, 3, S)
        self.expr_drift, self.jaw_drift = expr_drift(head.meta, len(self.bary), head.n_expr) if detector_basis \
            else (None, None)
        names = list(head.joint_names)
        self.jaw_idx = names.index("jaw") if "jaw" in names else None
        if self.expr_drift is not None:
            self.ed_l = self.ed_l + self.expr_drift
            self.expr_drift_flat = self.expr_drift.reshape(-1, head.n_expr).T.copy()  # (E, L*3)
        self._parents_of = set(self.parents)
        self._reach: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._last: tuple | None = None

    def forward(self, shape: np.ndarray, expr: np.ndarray, pose: np.ndarray, trans: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> landmarks (T, L, 3), blended rotation per landmark (T, L, 3, 3), root joint position (T, 3)."""
        T, U = expr.shape[0], self.v0.shape[0]
        v = (self.v0 + self.sd @ shape).reshape(1, U * 3) + expr @ self.ed_flat
        joints = ((self.J0 + self.Jsd @ shape).reshape(1, -1) + expr @ self.Jed_flat).reshape(T, -1, 3)
        rots = rodrigues(pose)  # (T, J, 3, 3)
        if self.pd_flat.shape[0]:
            v = v + (rots[:, 1:] - np.eye(3)).reshape(T, -1) @ self.pd_flat
        v = v.reshape(T, U, 3)
        world_r, world_t = [], []
        for j, p in enumerate(self.parents):
            if p < 0:
                world_r.append(rots[:, j])
                world_t.append(joints[:, j])
            else:
                world_r.append(world_r[p] @ rots[:, j])
                world_t.append(np.einsum("tab,tb->ta", world_r[p], joints[:, j] - joints[:, p]) + world_t[p])
        R = np.stack(world_r, 1)
        skin_t = np.stack(world_t, 1) - np.einsum("tjab,tjb->tja", R, joints)
        M = (self.W @ R.reshape(T, -1, 9)).reshape(T, U, 3, 3)  # blended rotation per vertex
        verts = np.einsum("tuab,tub->tua", M, v) + self.W @ skin_t + trans[:, None, :]
        X = np.einsum("lk,tlkc->tlc", self.bary, verts[:, self.tri])
        A = np.einsum("lk,tlkab->tlab", self.bary, M[:, self.tri])
        self._last = (v, joints, world_r, rots, M, pose)
        if self.expr_drift is not None:  # the detector's own response, turned with the head
            off = (expr @ self.expr_drift_flat).reshape(T, -1, 3)
            if self.jaw_idx is not None:
                off = off + np.clip(pose[:, self.jaw_idx, 0], 0.0, None)[:, None, None] * self.jaw_drift[None]
            X = X + np.einsum("tab,tlb->tla", R[:, 0], off)
        return X, A, world_t[0] + trans

    def joint_jacobian(self, j: int, comps: tuple[int, ...], h: float = 1e-4, cache: tuple | None = None
                       ) -> list[np.ndarray] | None:
        """d landmarks / d pose[:, j, k] (T, L, 3) for each k in ``comps`` at the state of ``cache`` (default: the
        last ``forward``'s; see ``pick_cache``), the
        forward difference of step ``h`` in the axis-angle (what re-running ``forward`` would give), computed
        from the skinning of joint ``j`` alone. None when ``j`` has children (their chain moves too).

        Why: the jaw and the eyes are leaves, and only their own vertices move with them; a forward pass per
        component made 7 of the fit's 8 forward passes per iteration.
        """
        cache = self._last if cache is None else cache
        if cache is None or j in self._parents_of or j == 0:
            return None
        v, joints, world_r, rots, M, pose = cache
        T = v.shape[0]
        if j not in self._reach:
            verts = np.flatnonzero(self.W[:, j] > 0)
            lm = np.flatnonzero(np.isin(self.tri, verts).any(1))
            self._reach[j] = (verts, lm, self.W[verts, j])
        verts, lm, w = self._reach[j]
        Rp = world_r[self.parents[j]]
        rel = v[:, verts] - joints[:, j][:, None]
        pd = self.pd_flat[(j - 1) * 9:j * 9] if self.pd_flat.shape[0] else None
        out = []
        for k in comps:
            pk = pose[:, j].copy()
            pk[:, k] += h
            dr = (rodrigues(pk) - rots[:, j]) / h
            dv = np.zeros((T,) + v.shape[1:])
            dv[:, verts] = w[None, :, None] * np.einsum("tab,tnb->tna", Rp @ dr, rel)
            if pd is not None and np.any(pd):  # pose correctives (FLAME): the rest shape bends with the joint
                dv = dv + np.einsum("tuab,tub->tua", M, (dr.reshape(T, 9) @ pd).reshape(v.shape))
                lm_k = np.arange(len(self.tri))
            else:
                lm_k = lm
            dX = np.zeros((T, len(self.tri), 3))
            dX[:, lm_k] = np.einsum("lk,tlkc->tlc", self.bary[lm_k], dv[:, self.tri[lm_k]])
            if self.expr_drift is not None and j == self.jaw_idx and k == 0:
                x = pose[:, j, 0]
                slope = (np.clip(x + h, 0.0, None) - np.clip(x, 0.0, None)) / h
                dX = dX + slope[:, None, None] * np.einsum("tab,lb->tla", world_r[0], self.jaw_drift)
            out.append(dX)
        return out

    @staticmethod
    def pick_cache(ok: np.ndarray, a: tuple, b: tuple) -> tuple:
        """Per frame, ``a``'s forward intermediates where ``ok`` else ``b``'s (frames accept steps on their own)."""
        def sel(x, y):
            if isinstance(x, list):
                return [sel(p, q) for p, q in zip(x, y)]
            return np.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)

        return tuple(sel(x, y) for x, y in zip(a, b))
