"""``./cadence eval refiner CLIP... [--minutes M] [--size S]``: the refiner's quality on the person's own clips.

Each clip is tracked onto the default head (cached), its tracked take rendered with Eevee through the
tracked camera (cached), and paired with its real frames. The refiner trains on every clip but the last
and the first half of the last (one clip: its first 80 %), for ``--minutes``, then the held-out frames are
compared with the real ones (``inference/refiner/evaluate.py``): PSNR / SSIM in the face box and the mouth of
the raw render on the real background, the textured render (when built) and the refined frame. Writes
DIR/refiner_table.txt, DIR/refiner_side_by_side.png and DIR/refiner_training.png (--out, default ./cadence-eval).
The cache (the head's landmark calibration, tracks, renders) lives in --cache (default ~/.cache/cadence-eval).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402
from tools.eval import _file_key  # noqa: E402


def _track_cached(video: Path, head, cache: Path, lens_mm: float | None, log) -> dict:
    """{"channels", "camera", "identity", "landmarks", "fps"} of ``video`` tracked at its own rate (cached)."""
    from inference.protocol import Channels
    from inference.tracking import video as vid
    from inference.tracking.track import track_video

    fps = vid.probe(video).fps
    key = _file_key(video, head.content_hash(), f"{fps:.4f}", str(lens_mm), "refiner")
    ch_file, meta_file, lm_file = cache / f"{key}.npz", cache / f"{key}.json", cache / f"{key}_landmarks.npy"
    if not (ch_file.is_file() and meta_file.is_file() and lm_file.is_file()):
        t0 = time.perf_counter()
        res = track_video(video, head, fps, audio_dir=cache, lens_mm=lens_mm)
        res.channels.save(ch_file)
        np.save(lm_file, res.landmarks)
        meta_file.write_text(json.dumps({"camera": res.camera, "identity": np.asarray(res.identity).tolist(),
                                         "fps": fps}))
        log(f"tracked {video.name}: {res.n_frames} frames at {fps:g} fps ({time.perf_counter() - t0:.0f} s)")
    meta = json.loads(meta_file.read_text())
    return {"channels_file": str(ch_file), "n_frames": Channels.load(ch_file).n_frames, "camera": meta["camera"], "identity": np.asarray(meta["identity"]),
            "landmarks": np.load(lm_file), "fps": float(meta["fps"]), "key": key}


def _render_cached(cadence, rig, context, video: Path, track: dict, cache: Path, samples: int, log) -> str:
    """The tracked take of ``video`` rendered through its camera (cached by track and samples)."""
    from inference.refiner.frames import MANIFEST

    ops = cadence.operators
    folder = cache / f"{track['key']}_renders_v2_s{samples}"  # v2: renders that follow the take
    if (folder / MANIFEST).is_file():
        return str(folder)
    scene = context.scene
    ops.tracking.frame_rate.set_scene_fps(scene, track["fps"])
    ops.rig.pose.apply_identity(rig, track["identity"])
    take = f"{video.stem} track"
    channels = cadence.inference.protocol.Channels.load(track["channels_file"])  # the extension's own class
    ops.keys.keyframes.write_take(rig, channels, frame_start=1, take_name=take, mode="NEW")
    rig["cadence"]["last_track"] = {"video": str(video), "camera": track["camera"], "take": take, "frame_start": 1}
    render_take(ops, context, rig, str(folder), 1, track["n_frames"], take, samples, video.name, log)
    return str(folder)


def render_take(ops, context, rig, folder: str, first: int, last: int, take: str, samples: int, label: str,
                log=print) -> None:
    """Eevee renders of ``take`` (frames first..last) through the rig's last tracked camera into ``folder``."""
    t0 = time.perf_counter()
    steps = ops.refiner.render.render_steps(context, rig, folder, first, last, take=take, samples=samples)
    shown = 0.0
    try:
        while True:
            frac, msg = next(steps)
            if time.perf_counter() - shown > 30:
                shown = time.perf_counter()
                log(f"  {label}: {msg}")
    except StopIteration:
        pass
    log(f"rendered {label}: {last - first + 1} frames with Eevee ({time.perf_counter() - t0:.0f} s)")


def eval_refiner(args) -> int:
    videos = [Path(c).resolve() for c in args.clips]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"eval refiner: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(args.cache).expanduser().resolve()
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = blender_session.prepare()
    import bpy

    cadence = blender_session.enable_cadence(scratch)
    try:
        return _run(args, cadence, bpy, videos, out, cache_root)
    finally:
        blender_session.disable_cadence()


def _run(args, cadence, bpy, videos, out: Path, cache_root: Path) -> int:
    from inference.heads.head_model import HeadModel
    from inference.refiner import train

    log = print
    cadence.operators.prefs.get_preferences().cache_dir = str(cache_root)
    bpy.ops.wm.read_homefile(use_empty=True)
    if bpy.ops.cadence.add_head() != {"FINISHED"}:
        raise RuntimeError("adding the default head failed")
    rig = bpy.context.active_object
    log("preparing the head for tracking (its landmark calibration takes a few minutes the first time) ...")
    steps = cadence.operators.track_video.tracking_head_steps(rig, bpy.context, str(videos[0]))
    head = HeadModel.load(cadence.operators.tracking.landmark_calibration.run_steps(steps)["head_file"])
    cache = cache_root / "eval-refiner"
    cache.mkdir(exist_ok=True)
    tracks, folders = [], []
    for v in videos:
        track = _track_cached(v, head, cache, args.lens_mm or None, log)
        folders.append(_render_cached(cadence, rig, bpy.context, v, track, cache, args.samples, log))
        tracks.append(track)
    n_last = tracks[-1]["n_frames"]
    cut_local = n_last // 2 if len(videos) > 1 else int(round(n_last * (1 - train.VAL_FRACTION)))
    return judge(args, videos, folders, tracks[-1]["landmarks"], cut_local, head.content_hash(), out, log)


def judge(args, videos: list[Path], folders: list[str], landmarks, cut_local: int, head_hash: str, out: Path,
          log=print, notes: list[str] | None = None, name: str = "refiner") -> int:
    """Train on every clip but the last and the last's first ``cut_local`` frames, judge the rest of the last
    (``landmarks``: its (T, 478, 2+) MediaPipe landmarks in frame pixels, for the mouth); print and write the table."""
    import torch

    from inference.refiner import evaluate as ev
    from inference.refiner import frames, pairs, refine, texture, train
    from inference.refiner.networks import RefinerConfig

    projector = None
    data = []
    for i, (v, folder) in enumerate(zip(videos, folders)):
        renders = frames.load_renders(folder)
        if projector is None:
            projector = texture.Projector(renders.geometry()[1])
        painted = np.arange(len(renders)) if i < len(videos) - 1 else np.arange(cut_local)  # never held-out frames
        data.append(pairs.training_pairs(folder, str(v), 0, args.size, projector=projector, project_frames=painted))
    log("painting the person's texture from the training frames ...")
    colours, seen = projector.result()
    for d in data:
        pairs.add_textured(d.renders, d.boxes, d.render_crops, colours)
    lengths = [len(d.renders) for d in data]
    rc = np.concatenate([d.render_crops for d in data])
    real = np.concatenate([d.real_crops for d in data])
    clip_of = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    start = sum(lengths[:-1])
    cut = start + cut_local
    held = np.arange(cut, len(rc))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = RefinerConfig(size=args.size).check()
    nets = train.Nets.new(cfg, seed=args.seed)
    nets.texture = colours
    log(f"training the refiner at {args.size}² on {device} for {args.minutes:g} min: {len(rc) - len(held)} training "
        f"frames, {len(held)} held out ({videos[-1].name} from frame {cut - start + 1})")
    last = [0.0]

    def progress(f, m):
        if time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            log(f"  {m}")

    hist = train.train(nets, rc, real, max_minutes=args.minutes, device=device, seed=args.seed, progress=progress,
                       held_out=held, clip_of=clip_of, eval_every_s=60.0, augment=args.augment)
    train.save(nets, str(out / f"{name}_eval.refiner.pt"), head_hash, data[-1].clip_record(), hist)
    judged = data[-1]
    refined_all = refine.refine_crops(nets, judged.render_crops, judged.renders.fps, device)
    local = held - start
    mouths = ev.mouth_boxes(np.asarray(landmarks)[local], judged.boxes[local], args.size)
    images = ev.composites(judged.render_crops[local], judged.real_crops[local], refined_all[local])
    results = {videos[-1].stem: ev.scores(judged.real_crops[local], images, mouths)}
    notes = [f"{hist['iterations']} iterations in {hist['seconds'] / 60:.1f} min on {device} "
             f"({hist['iterations'] / max(hist['seconds'], 1e-9):.2f} it/s), held-out PSNR during training "
             f"{hist['val_psnr'][0]:.2f} -> {hist['val_psnr'][-1]:.2f} dB",
             f"texture: {100 * (seen > 0).mean():.0f} % of the head's triangles seen in the training frames",
             *(notes or [])]
    text = ev.format_table(results, notes)
    print(text)
    (out / f"{name}_table.txt").write_text(text + "\n")
    ev.side_by_side(judged.real_crops[local].astype(np.float32), images, str(out / f"{name}_side_by_side.png"))
    _plot_training(hist, str(out / f"{name}_training.png"))
    print(f"table and pictures in {out}")
    return 0


def _plot_training(hist: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    l1 = np.asarray(hist["loss_l1"])
    if len(l1):
        k = max(1, len(l1) // 100)
        a.plot(np.arange(len(l1) // k) * k, l1[: len(l1) // k * k].reshape(-1, k).mean(1))
    a.set_xlabel("iteration")
    a.set_ylabel("training L1")
    b.plot(hist["val_iter"], hist["val_psnr"], "o-")
    b.set_xlabel("iteration")
    b.set_ylabel("held-out PSNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("refiner", help="the refiner's frames against the person's held-out real frames")
    p.add_argument("clips", nargs="+", help="videos of one person (the last is judged on its second half)")
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    p.add_argument("--size", type=int, default=128, help="crop size (128 on CPU, 256 on a GPU)")
    p.add_argument("--samples", type=int, default=4, help="Eevee samples per render")
    p.add_argument("--out", default="cadence-eval", help="folder for the table and the pictures")
    p.add_argument("--cache", default="~/.cache/cadence-eval", help="tracks, renders and the head's calibration")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="mirror and shift the training pairs (not yet measured)")
    p.add_argument("--lens-mm", type=float, default=0.0, help="the camera's focal length when known")
