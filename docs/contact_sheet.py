"""The platform presets side by side (issue 21): one still of each, at the same moment of the same song.

Renders a short real song (HyperRogue's "Crossroads", a Debian package) once per `spec.video.platform`
with the procedural backend, a title card and one lyric line, takes the frame at the same second from
each, scales them to one height and tiles them with their names under them. The picture is an output,
so it is written outside the clone (default ~/.cache/vibecraft/contact-sheet.png), not committed;
docs/renderer.md says what it shows.

    .venv/bin/python docs/contact_sheet.py [--out FILE] [--at SECONDS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vibecraft_common.limits import PLATFORM_SIZES

SONG = Path("/usr/share/hyperrogue/music/hr3-crossroads.ogg")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
TILE_HEIGHT = 480
LYRICS = "[00:00.50]\n[00:05.00]Every road leads back to the crossroads\n[00:09.50]\n"
PRESETS = ("youtube", "shorts", "square")  # reels and tiktok are shorts' size


def render(song: Path, platform: str, out: Path) -> Path:
    lyrics = out.parent / "song.lrc"
    lyrics.write_text(LYRICS)
    cmd = [sys.executable, "-m", "vibecraft_renderer", str(song), "-o", str(out), "--platform", platform,
           "--fps", "24", "--lyrics", str(lyrics), "--title", "Crossroads", "--artist", "HyperRogue", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBECRAFT_")}
    subprocess.run(cmd, check=True, env=env)
    return out / "video.mp4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path.home() / ".cache" / "vibecraft" / "contact-sheet.png")
    p.add_argument("--at", type=float, default=6.0, help="the moment shown (default: a lyric line is on screen)")
    ns = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.ogg"
        subprocess.run(["ffmpeg", "-v", "error", "-ss", "10", "-t", "10", "-i", str(SONG), str(song)], check=True)
        inputs, filters = [], []
        for k, platform in enumerate(PRESETS):
            video = render(song, platform, Path(tmp) / platform)
            inputs += ["-ss", str(ns.at), "-i", str(video)]
            w, h = PLATFORM_SIZES[platform]
            label = f"{platform} {w}x{h}"
            filters.append(f"[{k}:v]scale=-2:{TILE_HEIGHT},pad=iw+16:ih+40:8:0:white,"
                           f"drawtext=fontfile={FONT}:text='{label}':x=(w-tw)/2:y=h-32:fontsize=22[t{k}]")
        tiles = "".join(f"[t{k}]" for k in range(len(PRESETS)))
        graph = ";".join(filters) + f";{tiles}hstack=inputs={len(PRESETS)}"
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-frames:v", "1",
                        str(ns.out)], check=True)  # fmt: skip
    print(ns.out)


if __name__ == "__main__":
    main()
