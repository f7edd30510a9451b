"""How well a persona moves like its person on audio it has not seen: the table behind ``cadence eval persona``.

Split a person's tracked clips (leave one clip out, or hold out the tail of each), personalize on
the rest, generate from the held-out audio in every mode and with the generic (procedural) motion,
and compare each with the person's tracked motion on that audio:

- rotation std per axis (degrees) and velocity std (degrees/s): amplitude and liveliness;
- FD full: Fréchet distance between 1 s windows' per-axis mean / std / RMS velocity (pose in units
  of the truth's per-axis spread); FD dyn: the same without the means (dynamics only);
- rhythm: correlation of head speed with the voice's accents (``prosody.voice_curves``) on the
  same audio, so a persona that nods on stress scores like the person does;
- for the network, its held-out loss against the mean predictor's.

The person's *other* footage (what was personalized on) is a row too: the figure a persona can hope
to reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..audio import prosody
from ..protocol import Channels
from . import persona as ps
from . import pose_net, pose_style, train_pose

WINDOW_S = 1.0


@dataclass
class Clip:
    name: str
    channels: Channels
    audio: np.ndarray  # 16 kHz mono


@dataclass
class Fold:
    held_out: str
    rows: dict = field(default_factory=dict)  # row name -> metrics dict
    curves: dict = field(default_factory=dict)  # row name -> (T, 6) pose
    fps: float = 25.0
    network: dict = field(default_factory=dict)  # held_out_loss, mean_loss


def pose6(ch: Channels) -> np.ndarray:
    return np.concatenate([ch.get("head_rotation"), ch.get("head_translation")], axis=1)


def window_stats(p: np.ndarray, fps: float, dyn: bool = False) -> np.ndarray:
    """(N, 3D) or (N, 2D) without the means: per-axis mean, std and RMS velocity of 1 s windows (hop 1/4 s)."""
    win = max(3, int(round(WINDOW_S * fps)))
    hop = max(1, win // 4)
    if len(p) < win:
        raise pose_style.PoseStyleError(f"{len(p)} frames is shorter than one {WINDOW_S:g} s window")
    w = np.stack([p[s:s + win] for s in range(0, len(p) - win + 1, hop)])
    vel = np.sqrt((np.diff(w, axis=1) ** 2).mean(1)) * fps
    parts = ([] if dyn else [w.mean(1)]) + [w.std(1), vel]
    return np.concatenate(parts, axis=1)


def fd(gen: np.ndarray, truth: np.ndarray, fps: float, dyn: bool = False) -> float:
    scale = pose_style.axis_scale(truth)
    return pose_style.frechet_distance(window_stats(gen / scale, fps, dyn), window_stats(truth / scale, fps, dyn))


def voice_accents(audio: np.ndarray, fps: float, n: int) -> np.ndarray:
    """(n,) the voice's accents (``prosody.voice_curves``) at the frames' times."""
    acc = prosody.voice_curves(prosody.of_audio(audio))["accent"]
    return np.interp(np.arange(n) / fps, np.arange(len(acc)) / prosody.FEAT_RATE, acc)


def rhythm(p: np.ndarray, accents: np.ndarray, fps: float) -> float:
    """Correlation of head rotation speed (0.1 s smoothed) with the voice's accents at the same frames."""
    a = accents[:len(p)]
    speed = np.linalg.norm(np.gradient(pose_style.gaussian_smooth(p[:len(a), :3], 0.1 * fps), axis=0), axis=1)
    if speed.std() < 1e-12 or a.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(speed, a)[0, 1])


def metrics(gen: np.ndarray, truth: np.ndarray, accents: np.ndarray, fps: float) -> dict:
    n = min(len(gen), len(truth))
    g, t = gen[:n], truth[:n]
    rot = np.degrees(g[:, :3])
    return {"rot_std": rot.std(0).tolist(), "vel_std": (np.diff(rot, axis=0) * fps).std(0).tolist(),
            "fd_full": fd(g, t, fps), "fd_dyn": fd(g, t, fps, dyn=True), "rhythm": rhythm(g, accents, fps)}


def network_losses(persona: ps.Persona, clip: Clip) -> dict:
    """The persona network's loss on a clip it never saw, and the loss of predicting the mean."""
    import torch

    from ..audio import features as audio_features

    model = persona.network()
    cfg = model.cfg
    feats = audio_features.frame_windows(clip.audio, clip.channels.fps,
                                         audio_features.FeatureConfig.from_dict(persona.feature_config),
                                         n_frames=clip.channels.n_frames)
    y = torch.as_tensor(train_pose.targets_from_channels(clip.channels), dtype=torch.float32)
    pred = torch.as_tensor(pose_net.predict(model, feats, seq_len=persona.seq_len), dtype=torch.float32)
    with torch.no_grad():
        yn, pn = model.normalise(y)[None], model.normalise(pred)[None]
        loss = float(pose_net.pose_loss(pn, yn, cfg.n_face)["total"])
        mean = float(pose_net.pose_loss(torch.zeros_like(yn), yn, cfg.n_face)["total"])
    return {"held_out_loss": loss, "mean_loss": mean}


def run_fold(train: list[Clip], held: Clip, head_hash: str, seed: int = 0, epochs: int = 100,
             net_overrides: dict | None = None, modes: tuple[str, ...] = ps.MODES,
             generic: Callable[[np.ndarray, float, int, int], np.ndarray] | None = None,
             progress: Callable[[float, str], None] | None = None) -> Fold:
    """Personalize on ``train``, generate from ``held``'s audio, and measure every row against its tracked motion.

    ``generic(audio, fps, n_frames, seed) -> (n_frames, 6)``: the motion without a persona, for its row
    (``motion.head_motion.head_pose_for_audio``; passed in because the motion stage sits above this one)."""
    fps = held.channels.fps
    truth = pose6(held.channels)
    n = len(truth)
    persona = ps.personalize([c.channels for c in train], [c.audio for c in train], head_hash, n_frames=None,
                             epochs=epochs, seed=seed, net_overrides=net_overrides, progress=progress)
    fold = Fold(held_out=held.name, fps=fps)
    fold.curves["truth"] = truth
    accents = voice_accents(held.audio, fps, n)  # once per fold: every row is timed against the same voice
    fold.rows["truth"] = metrics(truth, truth, accents, fps)
    others = [pose6(c.channels) for c in train]
    fold.rows["own other footage"] = _metrics_of_other(others, truth, fps)
    for mode in modes:
        gen = ps.generate_pose(persona, held.audio, fps, mode=mode, seed=seed, n_frames=n)
        p = np.concatenate([gen["head_rotation"], gen["head_translation"]], axis=1)
        fold.curves[f"persona, {mode}"] = p
        fold.rows[f"persona, {mode}"] = metrics(p, truth, accents, fps)
    if generic is not None:
        g = np.asarray(generic(held.audio, fps, n, seed), float)
        fold.curves["generic"] = g
        fold.rows["generic"] = metrics(g, truth, accents, fps)
    fold.network = network_losses(persona, held)
    return fold


def _metrics_of_other(others: list[np.ndarray], truth: np.ndarray, fps: float) -> dict:
    """The person's other footage against the truth (its own figures; rhythm is not defined on other audio)."""
    cat = np.concatenate(others)
    rot = np.degrees(cat[:, :3])
    vel = np.concatenate([np.diff(np.degrees(o[:, :3]), axis=0) * fps for o in others])
    scale = pose_style.axis_scale(truth)
    feats = [window_stats(o / scale, fps) for o in others if len(o) >= WINDOW_S * fps]
    dyn = [window_stats(o / scale, fps, dyn=True) for o in others if len(o) >= WINDOW_S * fps]
    return {"rot_std": rot.std(0).tolist(), "vel_std": vel.std(0).tolist(),
            "fd_full": pose_style.frechet_distance(np.concatenate(feats), window_stats(truth / scale, fps)),
            "fd_dyn": pose_style.frechet_distance(np.concatenate(dyn), window_stats(truth / scale, fps, dyn=True)),
            "rhythm": float("nan")}


def leave_one_out(clips: list[Clip], head_hash: str, **kw) -> list[Fold]:
    if len(clips) < 2:
        raise ps.PersonaError("leave-one-out needs at least two clips of the person")
    return [run_fold([c for c in clips if c is not held], held, head_hash, **kw) for held in clips]


def split_tail(clip: Clip, fraction: float) -> tuple[Clip, Clip]:
    """The clip's first (1 - fraction) and its last ``fraction`` as two clips (audio cut at the same time)."""
    ch = clip.channels
    k = int(round(ch.n_frames * (1.0 - fraction)))
    if k < 2 or ch.n_frames - k < 2:
        raise ps.PersonaError(f"{clip.name}: too short to hold out {fraction:.0%} of it")
    cut = int(round(k / ch.fps * prosody.SR))
    return (Clip(f"{clip.name} [:{k}]", ch.frames(0, k), clip.audio[:cut]),
            Clip(f"{clip.name} [{k}:]", ch.frames(k, ch.n_frames), clip.audio[cut:]))


def format_table(folds: list[Fold]) -> str:
    lines = []
    for f in folds:
        lines.append(f"held out: {f.held_out}  ({len(f.curves['truth'])} frames at {f.fps:g} fps)")
        lines.append(f"{'motion on held-out audio':<26} {'rot std p/y/r (deg)':>21} {'vel std (deg/s)':>18} "
                     f"{'FD full':>8} {'FD dyn':>7} {'rhythm':>7}")
        for name, m in f.rows.items():
            r, v = m["rot_std"], m["vel_std"]
            rh = "" if not np.isfinite(m["rhythm"]) else f"{m['rhythm']:+.2f}"
            lines.append(f"{name:<26} {r[0]:6.2f} /{r[1]:5.2f} /{r[2]:5.2f} {v[0]:6.1f} /{v[1]:5.1f} /{v[2]:4.1f} "
                         f"{m['fd_full']:8.1f} {m['fd_dyn']:7.1f} {rh:>7}")
        if f.network:
            lines.append(f"network held-out loss {f.network['held_out_loss']:.3f} "
                         f"(mean predictor {f.network['mean_loss']:.3f})")
        lines.append("")
    return "\n".join(lines)


def plot(folds: list[Fold], path: str) -> str:
    """One PNG: per fold, pitch and yaw over time for the truth, each persona mode and generic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(folds), 2, figsize=(13, 2.8 * len(folds)), squeeze=False)
    for row, f in zip(axes, folds):
        t = np.arange(len(f.curves["truth"])) / f.fps
        for ax, k, label in ((row[0], 0, "pitch"), (row[1], 1, "yaw")):
            for name, p in f.curves.items():
                lw, c = (2.4, "k") if name == "truth" else (1.2, None)
                ax.plot(t[:len(p)], np.degrees(p[:len(t), k]), label=name, lw=lw, color=c)
            ax.set_title(f"{f.held_out}: {label}", fontsize=9)
            ax.set_xlabel("s")
            ax.set_ylabel("deg")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
