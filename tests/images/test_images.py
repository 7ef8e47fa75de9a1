"""The real container images, built from the Dockerfiles by localcluster/build-images.sh with podman:
they exist, each carries only its component's dependencies, runs as uid 10001, the renderer works on a
read-only root filesystem, and a memory limit is enforced inside a container. Their sizes against the
targets are a benchmark (bench/bench_images.py, `make bench`), not a test."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from tests.renderer.helpers import caption_text

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
RENDERER = f"localhost/vibecraft/renderer:{VERSION}"
OPERATOR = f"localhost/vibecraft/operator:{VERSION}"
API = f"localhost/vibecraft/api:{VERSION}"
RUNTIME = os.environ.get("VIBECRAFT_OCI_RUNTIME", "/usr/sbin/runc")  # crun fails on cgroup v1 hybrid hosts
RUN = ["podman", "--runtime", RUNTIME, "run", "--rm", "--network", "none",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman buildah runc mmdebstrap)")
    res = subprocess.run(["bash", str(ROOT / "localcluster" / "build-images.sh")], capture_output=True, text=True)
    assert res.returncode == 0, f"build-images.sh failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def run(image: str, *args: str, entrypoint: str | None = "python",
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [*RUN, *extra]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    # conmon (podman 4.3 with runc) writes an empty `oom` marker into its working directory after an OOM
    # kill: run it from a scratch directory, not the checkout.
    with tempfile.TemporaryDirectory() as scratch:
        return subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=300, cwd=scratch)


def inspect(image: str, fmt: str) -> str:
    res = subprocess.run(["podman", "image", "inspect", "--format", fmt, image], capture_output=True, text=True)
    assert res.returncode == 0, f"{image}: {res.stderr}"
    return res.stdout.strip()


@pytest.mark.parametrize("image", [RENDERER, OPERATOR, API])
def test_image_exists(image: str) -> None:
    res = subprocess.run(["podman", "image", "exists", image])
    assert res.returncode == 0, f"{image} was not built"


FIND = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))"


@pytest.mark.parametrize("image", [OPERATOR, API])
def test_control_plane_has_no_renderer_deps(image: str) -> None:
    res = run(image, "-c", FIND, "librosa", "scipy", "numba", "llvmlite", "vibecraft_operator", "vibecraft_api",
              "vibecraft_renderer", "vibecraft_localcluster")
    assert res.returncode == 0, res.stderr
    found = res.stdout.split()
    assert {"vibecraft_operator", "vibecraft_api"} <= set(found), f"probe broken: {found}"  # the check can see modules
    assert not {"librosa", "scipy", "numba", "llvmlite", "vibecraft_renderer", "vibecraft_localcluster"} & set(found), (
        f"{image} carries {found}")


def test_renderer_has_no_control_plane_deps() -> None:
    res = run(RENDERER, "-c", FIND, "kopf", "fastapi", "uvicorn", "librosa", "vibecraft_renderer", "vibecraft_operator",
              "vibecraft_api", "vibecraft_localcluster")
    assert res.returncode == 0, res.stderr
    found = res.stdout.split()
    assert {"librosa", "vibecraft_renderer"} <= set(found), f"probe broken: {found}"
    assert not {"kopf", "fastapi", "uvicorn", "vibecraft_operator", "vibecraft_api", "vibecraft_localcluster"} & set(
        found), f"{RENDERER} carries {found}"


@pytest.mark.parametrize("image", [RENDERER, OPERATOR, API])
def test_runs_as_uid_10001(image: str) -> None:
    res = run(image, "-c", "import os; print(os.getuid(), os.getgid())")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "10001", f"{image} runs as uid {res.stdout.strip()}"


def test_renderer_help_on_read_only_root() -> None:
    res = run(RENDERER, "--help", entrypoint=None, extra=("--read-only",))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "usage" in res.stdout.lower()
    # and the root filesystem really is read-only there
    probe = run(RENDERER, "-c", "open('/home/vibecraft/x', 'w')", extra=("--read-only",))
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe.stderr


def test_memory_limit_is_enforced() -> None:
    alloc = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    res = run(RENDERER, "-c", alloc, extra=("--memory", "64m", "--memory-swap", "64m"))
    assert res.returncode == 137, f"exit {res.returncode} (expected an OOM kill, 137): {res.stdout}{res.stderr}"
    ok = run(RENDERER, "-c", alloc.replace("200", "16"), extra=("--memory", "64m", "--memory-swap", "64m"))
    assert ok.returncode == 0 and "survived" in ok.stdout, ok.stderr  # the limit, not the program, kills it


# The renderer's ffmpeg is a minimal build (Dockerfile.renderer): every native decoder/demuxer, but only
# the encoders and muxers the renderer writes. Inputs in the common formats are made on the host.
FORMATS = {"wav": [], "mp3": [], "ogg": ["-c:a", "libvorbis"], "opus": ["-ar", "48000"], "flac": [], "m4a": []}


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("no ffmpeg on the host to make the input files (apt-get install ffmpeg)")
    d = tmp_path_factory.mktemp("songs")
    d.chmod(0o777)  # the container writes its output here as uid 10001
    for ext, opts in FORMATS.items():
        res = subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=220:duration=6,volume=0.5",
             "-f", "lavfi", "-i", "anoisesrc=d=6:a=0.05", "-filter_complex", "amix=inputs=2", "-ac", "2", *opts,
             str(d / f"song.{ext}")], capture_output=True, text=True)  # fmt: skip
        if res.returncode != 0:
            pytest.skip(f"the host's ffmpeg cannot write .{ext}: {res.stderr[-300:]}")
    return d


def test_renderer_decodes_common_audio_formats(songs: Path) -> None:
    probe = ("import sys, numpy as np; from pathlib import Path; from vibecraft_renderer import audio\n"
             "for f in sys.argv[1:]:\n"
             "    audio.probe(Path(f))\n"
             "    n = sum(len(b) for b in audio.decode_blocks(Path(f)))\n"
             "    print(Path(f).suffix, n / audio.SAMPLE_RATE)\n")  # fmt: skip
    res = run(RENDERER, "-c", probe, *(f"/w/song.{ext}" for ext in FORMATS), extra=("-v", f"{songs}:/w:ro"))
    assert res.returncode == 0, res.stderr
    seconds = dict(line.split() for line in res.stdout.splitlines())
    assert set(seconds) == {f".{ext}" for ext in FORMATS}, res.stdout
    for ext, s in seconds.items():
        assert 5.9 < float(s) < 6.1, f"{ext} decoded to {s} s"


def test_renderer_renders_h264_aac(songs: Path) -> None:
    res = run(RENDERER, "/w/song.mp3", "-o", "/w/out.mp4", "--width", "320", "--height", "180", "--fps", "15", "-q",
              entrypoint=None, extra=("-v", f"{songs}:/w"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    streams = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                              "-of", "csv=p=0", str(songs / "out.mp4")], capture_output=True, text=True)  # fmt: skip
    assert streams.stdout.split() == ["h264,320,180", "aac"], streams.stdout + streams.stderr


def test_renderer_draws_captions_with_its_own_font_on_a_read_only_root(songs: Path) -> None:
    """libass in the image's ffmpeg, DejaVu Sans through fontconfig, nothing written outside the scratch dir:
    the caption band of a frame with a lyric line differs from the same render without lyrics; the title card
    shows in the middle. Read back with the host's tesseract when it has one."""
    (songs / "song.lrc").write_text("[00:01.00]HELLO CAPTIONS\n[00:05.00]\n")
    args = ["/w/song.mp3", "--width", "640", "--height", "360", "--fps", "10", "-q"]
    extra = ("-v", f"{songs}:/w", "--read-only", "--tmpfs", "/tmp")
    for out, more in (("plain.mp4", []), ("captions.mp4", ["--lyrics", "/w/song.lrc", "--title", "Crossroads"])):
        res = run(RENDERER, *args, "-o", f"/w/{out}", *more, entrypoint=None, extra=extra)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    def frame(name: str) -> bytes:
        return subprocess.run(["ffmpeg", "-v", "error", "-ss", "2.5", "-i", str(songs / name), "-frames:v", "1",
                               "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"], capture_output=True, check=True).stdout
    plain, captioned = frame("plain.mp4"), frame("captions.mp4")
    rows = [sum(abs(a - b) > 60 for a, b in zip(plain[r * 640:(r + 1) * 640], captioned[r * 640:(r + 1) * 640],
                                                strict=True)) for r in range(360)]  # fmt: skip
    assert sum(rows[270:340]) > 400 and sum(rows[130:230]) > 400, "no lyric line or title drawn"
    if shutil.which("tesseract"):
        assert "HELLO CAPTIONS" in caption_text(songs / "captions.mp4", 2.5, (640, 360), top=0.75)


NUMBA_INDEX = """import pickle, pathlib, collections
cpus = collections.Counter()
for p in pathlib.Path('/opt/numba-cache').rglob('*.nbi'):
    with open(p, 'rb') as f:
        pickle.load(f)  # numba's version header
        stamp, overloads = pickle.loads(f.read())
    cpus.update(key[1][1] for key in overloads)  # (signature, (triple, cpu name, features), hashes)
print(dict(cpus))
"""


def test_the_baked_numba_cache_serves_any_cpu() -> None:
    """numba keys cached kernels by CPU model: one baked for the build machine's model is ignored on
    every other node, which then compiles for ~25 s per pod. The image compiles for the generic CPU."""
    res = run(RENDERER, "-c", NUMBA_INDEX)
    assert res.returncode == 0, res.stderr
    cpus = ast.literal_eval(res.stdout)
    assert cpus and set(cpus) == {"generic"}, cpus
