"""Skin topology: an (azimuth x elevation) quad grid around the casting centre, with three slits.

The mouth slit and the two eye slits are rows of the grid whose vertices are doubled (an upper and
a lower copy), so the lips and the lids are separate edges that can part. Feature placement is done
by warping the elevation parameter: the eye warp lifts the upper lid row and lowers the lower lid row
into an almond-shaped aperture (re-evaluated with other lid openings for blinks), the mouth warp
levels the lip line. Lip volume is a radial profile measured from the lip line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import anatomy as A
from .surface import cast

# Rows: (elevation at segment end, rows in the segment); elevation in degrees from the centre.
_ROW_SEGMENTS = ((-72.0, 5), (-50.0, 7), (-30.0, 8), (None, 8), (-8.0, 8), (None, 22), (62.0, 12), (90.0, 7))
EYE_FALLOFF = 0.20  # rad of elevation over which the lid warp fades into the brow / cheek
LID_MOTION_FALLOFF = 0.11  # ... and over which a blink / squint / wide-open change fades
LASH_ROW = 0.9  # degrees: a thin row just above the upper lid margin (the lash line)
MOUTH_FALLOFF = 0.16
UPPER_LIP_H = 0.078  # rad: vermilion height at the midline (upper), measured from the lip line
LOWER_LIP_H = 0.092


def _rows() -> tuple[np.ndarray, int, int]:
    """Row elevations (radians, bottom to top, poles excluded) and the mouth / eye row indices."""
    knots = [-90.0]
    rows: list[float] = []
    special = []
    for end, n in _ROW_SEGMENTS:
        if end is None:
            end = np.degrees(A.STOMION_PHI) if not special else np.degrees(A.EYE_PHI)
            mark = True
        else:
            mark = False
        seg = np.linspace(knots[-1], end, n + 1)[1:]
        rows.extend(seg.tolist())
        knots.append(end)
        if mark:
            special.append(len(rows) - 1)
    rows = rows[:-1]  # the last knot is the top pole
    rows.insert(special[1] + 1, rows[special[1]] + LASH_ROW)
    return np.radians(np.array(rows)), special[0], special[1]


def _columns() -> np.ndarray:
    """Azimuths, symmetric about 0 (one column at 0 and one at pi), crowded at the face."""
    s = np.linspace(-np.pi, np.pi, A.N_COLUMNS, endpoint=False)
    return s - A.COLUMN_FRONT_DENSITY * np.sin(s)


def _fissure(t: np.ndarray, peak: float) -> np.ndarray:
    """Almond lid-margin profile on t in [0, 1], 0 at both canthi, 1 at the peak position."""
    t = np.clip(t, 0.0, 1.0)
    skew = t ** (np.log(0.5) / np.log(peak))  # moves the maximum to t = peak
    return np.sin(np.pi * skew) ** 0.85


@dataclass
class Slit:
    """A doubled run of a grid row: columns strictly between the corners are doubled."""

    row: int
    cols: np.ndarray  # interior columns (increasing theta)
    corner_lo: int  # column of the corner at lower theta
    corner_hi: int
    upper: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # vertex ids
    lower: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class SkinGrid:
    theta: np.ndarray  # (C,) column azimuths
    phi: np.ndarray  # (R,) row elevations
    mouth_row: int
    eye_row: int
    slits: dict  # "mouth", "eye_L", "eye_R" -> Slit
    v_theta: np.ndarray  # per skin vertex
    v_phi: np.ndarray
    v_side: np.ndarray  # +1 upper copy / -1 lower copy on a slit row, 0 elsewhere
    faces: np.ndarray
    n_vertices: int
    bottom_pole: int = 0
    top_pole: int = 0
    line_offset: np.ndarray | None = None  # cached lip-line elevation offset per vertex

    def vid(self, row: int, col: int) -> int:
        return 1 + row * len(self.theta) + col % len(self.theta)


def _slit_for(theta: np.ndarray, lo: float, hi: float, row: int) -> Slit:
    c_lo = int(np.argmin(np.abs(theta - lo)))
    c_hi = int(np.argmin(np.abs(theta - hi)))
    return Slit(row=row, cols=np.arange(c_lo + 1, c_hi), corner_lo=c_lo, corner_hi=c_hi)


def eye_canthi_theta() -> tuple[float, float]:
    """Azimuths (from the centre) of the left eye's inner and outer canthus."""
    out = []
    for a in (A.EYE_INNER, A.EYE_OUTER):
        p = A.EYE_L + A.LID_SHELL * np.array([np.sin(a), 0.0, np.cos(a)])
        out.append(float(A.angles_of(p)[0]))
    return out[0], out[1]


def build_grid() -> SkinGrid:
    theta = _columns()
    phi, mouth_row, eye_row = _rows()
    C, R = len(theta), len(phi)
    n = 2 + R * C
    th_in, th_out = eye_canthi_theta()
    slits = {
        "mouth": _slit_for(theta, -A.MOUTH_THETA, A.MOUTH_THETA, mouth_row),
        "eye_L": _slit_for(theta, th_in, th_out, eye_row),
        "eye_R": _slit_for(theta, -th_out, -th_in, eye_row),
    }
    v_theta = np.zeros(n)
    v_phi = np.zeros(n)
    v_side = np.zeros(n, dtype=np.int64)
    v_phi[0], v_phi[n - 1] = -np.pi / 2, np.pi / 2
    rr, cc = np.meshgrid(np.arange(R), np.arange(C), indexing="ij")
    v_theta[1 : n - 1] = theta[cc.ravel()]
    v_phi[1 : n - 1] = phi[rr.ravel()]
    grid = SkinGrid(theta, phi, mouth_row, eye_row, slits, v_theta, v_phi, v_side, np.zeros((0, 3), np.int64),
                    n, bottom_pole=0, top_pole=n - 1)
    lower_of: dict[tuple[int, int], int] = {}
    extra_theta, extra_phi = [], []
    for s in slits.values():
        s.upper = np.array([grid.vid(s.row, c) for c in s.cols], dtype=np.int64)
        ids = []
        for c in s.cols:
            lower_of[(s.row, c)] = grid.n_vertices + len(extra_theta)
            ids.append(lower_of[(s.row, c)])
            extra_theta.append(theta[c])
            extra_phi.append(phi[s.row])
        s.lower = np.array(ids, dtype=np.int64)
        v_side[s.upper] = 1
    k = len(extra_theta)
    grid.v_theta = np.concatenate([v_theta, extra_theta])
    grid.v_phi = np.concatenate([v_phi, extra_phi])
    grid.v_side = np.concatenate([v_side, -np.ones(k, dtype=np.int64)])
    grid.n_vertices = n + k

    def vid(row: int, col: int, below: bool) -> int:
        col %= C
        if below and (row, col) in lower_of:
            return lower_of[(row, col)]
        return grid.vid(row, col)

    faces = []
    for r in range(R - 1):
        for c in range(C):
            a, b = vid(r, c, False), vid(r, c + 1, False)
            d, e = vid(r + 1, c, True), vid(r + 1, c + 1, True)
            # Mirror-symmetric diagonals keep the left and right halves alike.
            if theta[c] >= 0:
                faces += [(a, b, e), (a, e, d)]
            else:
                faces += [(a, b, d), (b, e, d)]
    for c in range(C):
        faces.append((grid.bottom_pole, vid(0, c + 1, False), vid(0, c, False)))
        faces.append((grid.top_pole, vid(R - 1, c, True), vid(R - 1, c + 1, True)))
    grid.faces = np.array(faces, dtype=np.int64)
    return grid


# --------------------------------------------------------------------------- feature warps
def lid_margins(theta_abs: np.ndarray, closure: float = 0.0, lower_raise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Elevation offsets (upper >= 0 above the eye row, lower >= 0 below) of the lid margins.

    ``closure`` in [0, 1] lowers the upper lid to the meeting line, ``lower_raise`` lifts the lower lid.
    """
    th_in, th_out = eye_canthi_theta()
    t = (theta_abs - th_in) / (th_out - th_in)
    inside = (t > 0) & (t < 1)
    up = np.where(inside, A.LID_UPPER * 0.170 * _fissure(t, 0.45), 0.0)
    lo = np.where(inside, A.LID_LOWER * 0.170 * _fissure(t, 0.58), 0.0)
    meet = -0.70 * lo  # the lids meet a little below the eye's equator
    lo_now = lo * (1.0 - lower_raise)
    lo_now = lo_now + max(closure, 0.0) * (-meet - lo_now)  # the lower lid rises a little to meet it
    up_now = up + closure * (meet - up)
    return up_now, lo_now


def eye_warp(theta: np.ndarray, phi: np.ndarray, side: np.ndarray, closure: float = 0.0,
             lower_raise: float = 0.0) -> np.ndarray:
    """Elevation offset that opens the lids into an almond aperture."""
    up0, lo0 = lid_margins(np.abs(theta))
    up, lo = lid_margins(np.abs(theta), closure, lower_raise)
    d = phi - A.EYE_PHI
    g = np.cos(0.5 * np.pi * np.clip(np.abs(d) / EYE_FALLOFF, 0, 1)) ** 2
    # A blink moves the lid, not the skin under the brow: its change fades out faster than the rest shape.
    gm = np.cos(0.5 * np.pi * np.clip(np.abs(d) / LID_MOTION_FALLOFF, 0, 1)) ** 2
    above = (d > 0) | ((d == 0) & (side >= 0))
    return np.where(above, up0 * g + (up - up0) * gm, -lo0 * g - (lo - lo0) * gm)


def mouth_line_offset(theta: np.ndarray) -> np.ndarray:
    """Elevation offset of the lip line per azimuth so the closed lip line is level (corners 0.4 mm down: a relaxed mouth, not a smile)."""
    th = np.abs(np.asarray(theta, dtype=np.float64))
    t = th / A.MOUTH_THETA
    target_y = A.STOMION[1] - 0.0004 * np.clip(t, 0, 1) ** 2
    off = np.zeros_like(th)
    for _ in range(4):  # secant-free fixed point: y is ~linear in the elevation near the line
        ph = A.STOMION_PHI + off
        r = cast(A.direction(th, ph))
        y = A.CENTER[1] + r * np.sin(ph)
        off += (target_y - y) / np.maximum(r * np.cos(ph), 1e-3)
    fade = np.cos(0.5 * np.pi * np.clip((t - 1.0) / 0.9, 0, 1)) ** 2
    return off * fade


def mouth_warp(theta: np.ndarray, phi: np.ndarray, line_offset: np.ndarray) -> np.ndarray:
    d = np.abs(phi - A.STOMION_PHI) / MOUTH_FALLOFF
    return line_offset * np.cos(0.5 * np.pi * np.clip(d, 0, 1)) ** 2


def lip_profile(theta: np.ndarray, phi_w: np.ndarray, line_phi: np.ndarray) -> np.ndarray:
    """Radial lip volume (metres) at warped elevation ``phi_w``: crease at the line, vermilion, border."""
    t = np.clip(np.abs(theta) / A.MOUTH_THETA, 0, 1.6)
    lateral = np.cos(0.5 * np.pi * np.clip(t / 1.25, 0, 1)) ** 1.5
    h_up = UPPER_LIP_H * (1.0 - 0.55 * np.clip(t, 0, 1) ** 2) * (1.0 + 0.10 * np.exp(-((t - 0.22) / 0.12) ** 2)
                                                               - 0.10 * np.exp(-(t / 0.08) ** 2))
    h_lo = LOWER_LIP_H * (1.0 - 0.60 * np.clip(t, 0, 1) ** 2)
    s = phi_w - line_phi
    u_up = np.clip(s / h_up, 0, None)
    u_lo = np.clip(-s / h_lo, 0, None)
    upper = 0.0049 * np.sin(np.pi * np.clip(u_up, 0, 1) ** 0.8) + 0.0012 * np.exp(-((u_up - 1.0) / 0.16) ** 2)
    upper -= 0.0006 * np.exp(-((u_up - 1.9) / 0.5) ** 2)
    lower = 0.0058 * np.sin(np.pi * np.clip(u_lo, 0, 1) ** 0.9) + 0.0008 * np.exp(-((u_lo - 1.0) / 0.18) ** 2)
    lower -= 0.0022 * np.exp(-((u_lo - 1.75) / 0.45) ** 2)  # labiomental fold
    # Philtrum: two columns from the Cupid's bow to the nose with a shallow groove between them.
    xl = 0.096 * np.abs(theta)
    along = np.exp(-(((u_up - 1.8) / 0.8) ** 4)) * (s > 0)
    col_x = 0.0044 - 0.0012 * np.clip((u_up - 1.0) / 1.5, 0, 1)
    upper += along * (0.00055 * np.exp(-(((xl - col_x) / 0.0013) ** 2)) - 0.00030 * np.exp(-((xl / 0.0022) ** 2)))
    crease = -0.0007 * np.exp(-(s / 0.012) ** 2)
    prof = np.where(s >= 0, upper, lower) + crease
    return prof * lateral


def vermilion_mask(theta: np.ndarray, phi_w: np.ndarray, line_phi: np.ndarray) -> np.ndarray:
    """True where a skin vertex lies on the red of the lips (within the vermilion border, between the corners)."""
    t = np.abs(theta) / A.MOUTH_THETA
    tc = np.clip(t, 0, 1)
    s = phi_w - line_phi
    inside = np.where(s >= 0, s <= 1.02 * UPPER_LIP_H * (1.0 - 0.55 * tc**2), -s <= 1.02 * LOWER_LIP_H * (1.0 - 0.60 * tc**2))
    return inside & (t < 1.04)


def skin_positions(grid: SkinGrid, closure: tuple[float, float] = (0.0, 0.0),
                   lower_raise: tuple[float, float] = (0.0, 0.0), with_params: bool = False,
                   ids: np.ndarray | None = None):
    """Skin vertex positions (n_skin, 3); ``closure`` / ``lower_raise`` per eye (left, right).

    With ``with_params`` also the warped elevation of each vertex and the lip-line elevation there;
    with ``ids`` only those vertices (poles excluded).
    """
    if grid.line_offset is None:  # the lip line is the same for every lid state: cast it once
        uniq, inv = np.unique(np.round(grid.v_theta, 12), return_inverse=True)
        grid.line_offset = mouth_line_offset(uniq)[inv]
    sel = slice(None) if ids is None else ids
    th, ph, side = grid.v_theta[sel], grid.v_phi[sel], grid.v_side[sel]
    line_off = grid.line_offset[sel]
    left = th >= 0
    cl = np.where(left, closure[0], closure[1])
    lr = np.where(left, lower_raise[0], lower_raise[1])
    warp_e = np.zeros_like(th)
    for c, r in {(a, b) for a, b in zip(cl.tolist(), lr.tolist())}:
        m = (cl == c) & (lr == r)
        warp_e[m] = eye_warp(th[m], ph[m], side[m], c, r)
    pw = ph + mouth_warp(th, ph, line_off) + warp_e
    if ids is None:
        pw[[grid.bottom_pole, grid.top_pole]] = ph[[grid.bottom_pole, grid.top_pole]]
    d = A.direction(th, pw)
    r = cast(d) + lip_profile(th, pw, A.STOMION_PHI + line_off)
    pos = A.CENTER + r[:, None] * d
    return (pos, pw, A.STOMION_PHI + line_off) if with_params else pos
