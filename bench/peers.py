"""Peers: other tools run on the job's scenario, so the bench reports a ratio beside ours.

Av1an (``bench/run.py --peers``). The PyPI ``av1an==6.1.5`` (May 2021) is Av1an's Python
implementation, the newest on PyPI (the later Rust rewrite is not there). It is a driver: it
detects scenes with PySceneDetect 0.5 (OpenCV), cuts the source into chunks and runs, per chunk
and ``--workers`` at a time, ``ffmpeg`` (decode + select) | ``ffmpeg`` (y4m) | ``x264``, then
checks each chunk's frame count (a full ``ffmpeg -f null`` decode) and joins the chunks and the
audio with ``ffmpeg``'s concat demuxer. It lives in its own venv (PEER_VENV) so that its old,
unpinned stack (OpenCV, SciPy, matplotlib) stays out of ours. What it needs, from its source:

- ``ffmpeg`` on PATH, by that bare name (``find_executable("ffmpeg")`` at start-up and in every
  command). There is no system ffmpeg here, and the peer should decode with the same binary as
  the job anyway: each run writes ``work_dir/bin/ffmpeg`` and puts it first on PATH. It is a
  small sh shim, not a plain symlink to the imageio-ffmpeg static binary (ffmpeg 9), because
  Av1an's keyframe segmenting (``split.segment``, used by its default chunk method) passes
  ``-vsync 0``, an option ffmpeg 7 removed in favour of ``-fps_mode passthrough``: with the
  symlink that command fails, no chunk is made and the run ends in "Concatenation failed". The
  shim rewrites exactly ``-vsync N`` to ``-fps_mode`` and ``exec``s the binary with every other
  argument untouched (no other option Av1an passes is gone). Av1an's own files are not modified;
- ``x264`` on PATH: Debian's CLI (``apt-get install x264``), found as ``x264``;
- not ffprobe: 6.1.5 never calls it (frame counts come from OpenCV's ``CAP_PROP_FRAME_COUNT``
  and ``ffmpeg -f null`` decodes, keyframes from ``ffmpeg -vf select`` at debug log level), so no
  workaround is needed; nor mkvmerge (only with ``--mkvmerge``); nor vspipe: without it Av1an's
  default chunk method is ``hybrid`` (stream-copy segments at the source's keyframes that are
  split points, then frame-exact ``select`` within them), passed explicitly so a machine that has
  VapourSynth does not silently measure another method;
- Python < 3.13: it imports ``distutils`` (from setuptools on 3.12) and the stdlib ``chunk``.

Matched settings (one rendition's ``settings`` from the job's manifest), single pass as ours:
``--preset``, ``--profile high``, ``--bitrate``, ``--vbv-maxrate``/``--vbv-bufsize``,
``--keyint N --min-keyint N --no-scenecut`` (closed GOP is x264's default), 8-bit ``yuv420p``
(Av1an's default pipe format is yuv420p10le). Av1an's own splitting is kept (PySceneDetect,
threshold 35, then extra splits, evenly spaced, so that no chunk is over 240 frames: a 750-frame
test pattern with no scene cut gives 4 chunks at 0/187/375/562), so every chunk starts
with an IDR frame: within a chunk the keyframes are every ``gop_frames``, but chunk starts add
keyframes off that grid, where ours keeps the segment grid. Audio is encoded as ours does (AAC
128k, stereo, 48 kHz: ``--audio_params``); the output is Matroska (Av1an's), not CMAF.

CPU seconds are the ``getrusage(RUSAGE_CHILDREN)`` delta around the run, which counts only
descendants that were waited for. Av1an can leave some unreaped: when a chunk's x264 exits it
``kill()``s the ffmpeg ends of the pipe that are still running, without ``wait()``. So Av1an runs
under a small wrapper that is a child subreaper (``PR_SET_CHILD_SUBREAPER``): orphans reparent to
it, and it waits for every one before it exits, so all their CPU is counted (in the runs here
there were none; the wrapper's own Python start-up, some 30 ms of CPU, is counted too). The wall
time is the whole ``av1an`` process, its imports (1.6-1.8 s here) included; its own "Finished" line
leaves those out. Its closing "stty: 'standard input': Inappropriate ioctl" is its ``atexit``
``stty sane`` without a terminal, harmless.
"""

from __future__ import annotations

import itertools
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.stratum.functions.ffmpeg import ffmpeg_binary

PEER_VENV = Path(__file__).resolve().parent / ".venv-peers"
AV1AN = "av1an==6.1.5"
SCENEDETECT = "scenedetect==0.5.6.1"
NAME = "av1an 6.1.5"
AUDIO_PARAMS = "-c:a aac -b:a 128k -ac 2 -ar 48000"
TIMEOUT_S = 3600.0

# Av1an's ``ffmpeg``: the job's binary, with the ``-vsync N`` that ffmpeg 7 removed spelt as
# ``-fps_mode`` (the same setting, renamed); ``exec`` leaves no extra process behind.
FFMPEG_SHIM = """\
#!/bin/sh
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  if [ "$a" = -vsync ] && [ "$n" -gt 0 ]; then
    case $1 in 0) v=passthrough ;; 1) v=cfr ;; 2) v=vfr ;; -1) v=auto ;; *) v=$1 ;; esac
    shift; n=$((n - 1))
    set -- "$@" -fps_mode "$v"
  else
    set -- "$@" "$a"
  fi
done
exec BINARY "$@"
"""

# Runs Av1an as its child; as a subreaper it inherits the orphans and waits for all of them.
REAPER = """\
import ctypes, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d" % ctypes.get_errno())
rc = subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
sys.exit(rc)
"""


@dataclass
class PeerRun:
    name: str
    seconds: float
    cpu_s: float
    output: Path
    command: list[str]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _installed() -> bool:
    """Both pinned versions in PEER_VENV (a half-made venv is rebuilt)."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        return False
    probe = "import importlib.metadata as m; print(m.version('av1an'), m.version('scenedetect'))"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return found.returncode == 0 and found.stdout.split() == ["6.1.5", "0.5.6.1"]


def ensure_av1an() -> None:
    """Create PEER_VENV with av1an==6.1.5 and scenedetect==0.5.6.1 (pip, PyPI) if missing, and
    Debian's x264 (apt-get) if `x264` is not on PATH; clear SystemExit message if impossible."""
    if sys.version_info >= (3, 13):
        raise SystemExit("av1an 6.1.5 imports the stdlib module 'chunk', gone in Python 3.13")
    if not _installed():
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        packages = [AV1AN, SCENEDETECT]
        if sys.version_info >= (3, 12):
            packages.append("setuptools")  # provides the distutils that Av1an imports
        steps = [
            [sys.executable, "-m", "venv", str(PEER_VENV)],
            [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
        ]
        for step in steps:
            if subprocess.run(step).returncode != 0:
                shutil.rmtree(PEER_VENV, ignore_errors=True)
                raise SystemExit(f"could not install Av1an: {shlex.join(step)} failed")
    if shutil.which("x264"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise SystemExit("x264 is not on PATH: install Debian's x264 (apt-get install x264)")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "x264"]
    if subprocess.run(install, env=env).returncode != 0:
        # a machine that never ran apt-get update has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env)
        if subprocess.run(install, env=env).returncode != 0 or not shutil.which("x264"):
            raise SystemExit("could not install Debian's x264: apt-get install x264 failed")


def _source_video(source: Path) -> tuple[int, int, Fraction]:
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return stream.width, stream.height, Fraction(rate)


def x264_params(settings: dict[str, Any]) -> list[str]:
    """The x264 CLI equivalent of what the job gives libx264 for this rendition."""
    if settings["encoder"] != "libx264":
        raise ValueError(f"the Av1an peer runs x264 only, not {settings['encoder']}")
    gop = str(settings["gop_frames"])
    params = ["--preset", settings["preset"], "--profile", "high",
              "--bitrate", str(settings["bitrate_kbps"])]  # fmt: skip
    if settings.get("maxrate_kbps") and settings.get("bufsize_kbps"):
        params += ["--vbv-maxrate", str(settings["maxrate_kbps"]),
                   "--vbv-bufsize", str(settings["bufsize_kbps"])]  # fmt: skip
    return [*params, "--keyint", gop, "--min-keyint", gop, "--no-scenecut"]


def av1an_command(
    source: Path, settings: dict[str, Any], work_dir: Path, workers: int = 2
) -> list[str]:
    """Av1an's CLI for one rendition; ``settings`` may carry ``width``/``height`` to scale to."""
    if settings.get("pix_fmt", "yuv420p") != "yuv420p":
        raise ValueError("the Av1an peer is set up for 8-bit yuv420p (--profile high)")
    width, height, rate = _source_video(source)
    if rate != Fraction(settings["frame_rate"]):
        # Av1an cuts and checks chunks by frame number: a rate change inside its pipe breaks that
        raise ValueError(f"source is {rate} fps, the rendition {settings['frame_rate']}")
    cmd = [str(PEER_VENV / "bin" / "av1an"), "--input", str(source),
           "--output_file", str(work_dir / "av1an.mkv"), "--temp", str(work_dir / "av1an-temp"),
           "--quiet", "--encoder", "x264", "--passes", "1", "--workers", str(workers),
           "--chunk_method", "hybrid", "--pix_format", "yuv420p",
           # "=": argparse takes a separate value that starts with "-" for an option
           f"--video_params={shlex.join(x264_params(settings))}",
           f"--audio_params={AUDIO_PARAMS}"]  # fmt: skip
    size = (settings.get("width", width), settings.get("height", height))
    if size != (width, height):
        cmd += [f"--ffmpeg=-vf scale={size[0]}:{size[1]}:flags=lanczos"]
    return cmd


def run_av1an(source: Path, settings: dict[str, Any], work_dir: Path, workers: int = 2) -> PeerRun:
    """Encode `source` with Av1an + x264 with the matched settings; return the measurement."""
    source, work_dir = source.resolve(), work_dir.resolve()
    bin_dir = work_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "ffmpeg"
    shim.write_text(FFMPEG_SHIM.replace("BINARY", shlex.quote(ffmpeg_binary())))
    shim.chmod(0o755)
    command = av1an_command(source, settings, work_dir, workers)
    output = Path(command[command.index("--output_file") + 1])
    output.unlink(missing_ok=True)  # else Av1an asks on stdin whether to overwrite
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = work_dir / "av1an.log"
    with log.open("wb") as out:
        cpu, started = _children_cpu(), time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", REAPER, *command], cwd=work_dir, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds, cpu_s = time.perf_counter() - started, _children_cpu() - cpu
    if rc != 0 or not output.exists() or output.stat().st_size == 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Av1an failed (exit {rc}): {shlex.join(command)}\n{tail}")
    return PeerRun(NAME, seconds, cpu_s, output, command)


def describe(path: Path) -> str:
    """Frame count, codecs and keyframe positions, read by demuxing (no decode)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        keyframes: list[int] = []
        frames = 0
        for packet in container.demux(video):
            if packet.size:
                if packet.is_keyframe:
                    keyframes.append(frames)
                frames += 1
        lines = [f"video: {video.codec_context.name} {video.width}x{video.height} "
                 f"{video.average_rate} fps, {frames} frames"]  # fmt: skip
        gaps = sorted({b - a for a, b in itertools.pairwise(keyframes)})
        lines.append(f"keyframes at {keyframes} (intervals {gaps})")
        for audio in container.streams.audio:
            ctx = audio.codec_context
            lines.append(f"audio: {ctx.name} {ctx.sample_rate} Hz {ctx.channels} ch")
    return "\n".join(lines)


def main() -> None:
    import argparse
    import tempfile

    from app.media.ladder import BUFSIZE_FACTOR, MAXRATE_FACTOR, gop_frames

    parser = argparse.ArgumentParser(description="Encode SOURCE with Av1an + x264, as the bench.")
    parser.add_argument("source", type=Path)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--bitrate", type=int, default=2000, help="kb/s")
    parser.add_argument("--segment-seconds", type=int, default=4, help="the GOP, as the job's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    ensure_av1an()
    rate = _source_video(args.source)[2]
    settings = {
        "encoder": "libx264",
        "preset": args.preset,
        "bitrate_kbps": args.bitrate,
        "maxrate_kbps": round(args.bitrate * MAXRATE_FACTOR),
        "bufsize_kbps": round(args.bitrate * BUFSIZE_FACTOR),
        "gop_frames": gop_frames(rate, args.segment_seconds),
        "frame_rate": f"{rate.numerator}/{rate.denominator}",
        "pix_fmt": "yuv420p",
    }
    work_dir = Path(tempfile.mkdtemp(prefix="cosmos-bench-av1an-"))
    try:
        run = run_av1an(args.source, settings, work_dir, args.workers)
        print(run)
        print(f"{run.seconds:.2f} s wall, {run.cpu_s:.2f} CPU-s, gop {settings['gop_frames']}")
        print(describe(run.output))
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
