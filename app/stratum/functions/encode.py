"""encode: renditions from the source into scratch storage, each decoded as it is muxed (the
audio: audio.py; chunks: chunks.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    EncodedMedia,
    EncodeRenditionsInput,
    EncoderSettings,
    EncodeVideoInput,
    Progress,
    Rendition,
)
from app.core.settings import Settings
from app.media.formats import count_frames
from app.storage.object_store import join, store_for
from app.stratum.functions.common import (
    ActivityBase,
    discarded_on_error,
    input_args,
    media_of,
    part_path,
)
from app.stratum.functions.ffmpeg import ffmpeg_binary, run_ffmpeg
from app.stratum.queues import EncodeMode

NVENC_ENCODERS = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}
CHECK_FORMATS = {"h264": "h264", "hevc": "hevc", "av1": "obu"}
"""The elementary stream an output's packets are teed as to its decode check: raw, so no
container can refuse a codec tag (NUT refuses ``hvc1``) or a codec (MPEG-TS has no AV1)."""


def encoder_name(rendition: Rendition, mode: EncodeMode) -> str:
    return NVENC_ENCODERS[rendition.codec] if mode == "nvenc" else rendition.settings.encoder


def software_frames(renditions: Sequence[Rendition]) -> bool:
    """Whether these renditions need the decoded frames in system memory from the start.

    Deinterlacing (bwdif), tone-mapping (zscale + tonemap) and 10-bit output run as software
    filters here, so a GPU worker decodes such a job in software (NVDEC frames would have to
    come back before the first filter anyway). Correct first: CUDA deinterlacing and
    tone-mapping (bwdif_cuda, libplacebo) are not wired here; no GPU was at hand to test them.
    """
    return any(
        r.settings.deinterlace or r.settings.tonemap or r.settings.pix_fmt != "yuv420p"
        for r in renditions
    )


def hwaccel_args(
    mode: EncodeMode, rotation: int, renditions: Sequence[Rendition] = ()
) -> list[str]:
    """Decode on the GPU (NVDEC) for the GPU modes; frames stay in GPU memory unless the
    picture must be rotated, which ffmpeg does in software. Renditions that need software
    filters (see :func:`software_frames`) are decoded in software."""
    if mode == "cpu" or software_frames(renditions):
        return []
    args = ["-hwaccel", "cuda"]
    if rotation == 0:
        args += ["-hwaccel_output_format", "cuda"]
    return args


@dataclass(frozen=True)
class Neighbours:
    """Where a chunk's neighbouring chunks are among the ffmpeg inputs (input 0 is the chunk).

    bwdif builds each frame from the fields before and after it; a chunk decoded alone has
    none at its ends, so its first and last frames would differ from the whole title's. The
    previous chunk's last frame and the next chunk's first are decoded with it, deinterlaced
    with it and trimmed off again. ``frames`` is the chunk's own frame count; ``before`` and
    ``after`` are input indexes (None at the title's ends). The ``before`` input must be
    opened near its end (``-sseof``) and the ``after`` one limited (``-t``): the graph keeps
    the last and the first frame of what they decode."""

    frames: int
    before: int | None = None
    after: int | None = None


def deinterlace_filter(settings: EncoderSettings) -> str:
    """bwdif at frame rate (one frame per frame) or field rate (one per field), told the
    measured parity, deinterlacing every frame (flags are not trusted: deint=all)."""
    mode = "send_field" if settings.deinterlace == "field" else "send_frame"
    return f"bwdif=mode={mode}:parity={settings.field_order or 'tff'}:deint=all"


def tonemap_filters(settings: EncoderSettings) -> list[str]:
    """HDR (PQ or HLG, BT.2020) to BT.709 SDR: linear light, BT.709 primaries, Hable's curve
    without desaturation, BT.709 transfer, limited range, 8-bit.

    The input transfer, primaries and matrix are stated, not read from the frames: an HDR
    source is BT.2020 by definition (BT.2100) and may arrive untagged, which zscale cannot
    convert from. The source's ST 2086 / CLL side data is dropped: an SDR stream carrying it
    would tell a display to treat the picture as HDR."""
    source = settings.tonemap_from or "smpte2084"
    return [
        f"zscale=tin={source}:min=bt2020nc:pin=bt2020:t=linear:npl=100:p=bt2020:m=bt2020nc",
        "format=gbrpf32le",
        "zscale=p=bt709",
        "tonemap=tonemap=hable:desat=0",
        "zscale=t=bt709:m=bt709:r=tv",
        "format=yuv420p",
        "sidedata=mode=delete:type=MASTERING_DISPLAY_METADATA",
        "sidedata=mode=delete:type=CONTENT_LIGHT_LEVEL",
    ]


def _branch_filters(rendition: Rendition, on_gpu: bool, mode: EncodeMode) -> list[str]:
    """Tag the matrix, scale (to limited range), tone-map where this rendition needs it, set
    the SAR.

    The scale comes before the tone-map: the float tone-map then runs at the rendition's
    size, not the source's (a 4K source's 360p H.264 rung costs 1/64 of it)."""
    chain: list[str] = []
    matrix = rendition.settings.color_matrix
    if matrix and not on_gpu and not rendition.settings.tonemap:
        # The source's matrix as the plan reads it (an untagged HD source is BT.709): without
        # it swscale takes "unknown" for BT.601 and converts the picture to the encoder's
        # BT.709 through RGB, shifting its colours and costing a tenth of the encode's CPU.
        chain.append(f"setparams=colorspace={matrix}")
    if on_gpu:
        chain.append(f"scale_cuda={rendition.width}:{rendition.height}:format=nv12")
        if mode == "cuda":  # software encoder: bring the scaled frames back to system memory
            chain += ["hwdownload", "format=nv12"]
    else:
        chain.append(f"scale={rendition.width}:{rendition.height}:flags=lanczos:out_range=tv")
    if rendition.settings.tonemap:
        chain += tonemap_filters(rendition.settings)
    sar = rendition.sample_aspect_ratio.replace(":", "/")
    chain.append(f"setsar=sar={sar}:max=65535")
    chain += _frame_colour(rendition.settings)
    return chain


def _frame_colour(s: EncoderSettings) -> list[str]:
    """The plan's primaries and transfer written on the frames themselves: ffmpeg gives an
    encoder the frames' primaries and transfer, not ``-color_primaries`` / ``-color_trc``
    (the matrix and range it negotiates through the filters), so an untagged HD source's
    BT.709 H.264 rendition came out with neither in its VUI (the validation pass found it).
    x265 and SVT-AV1 are also told in their own parameters."""
    tags = [("color_primaries", s.color_primaries), ("color_trc", s.color_transfer)]
    named = [f"{key}={X265_NAMES.get(value, value)}" for key, value in tags if value]
    return [f"setparams={':'.join(named)}"] if named else []


# ffmpeg's colour names that x265 and SVT-AV1 spell otherwise; names missing from a table are
# left to ffmpeg, which passes -color_primaries / -color_trc / -colorspace to both encoders.
X265_NAMES = {"gamma22": "bt470m", "gamma28": "bt470bg", "rgb": "gbr"}
X265_KNOWN = frozenset(
    {"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020", "smpte428",
     "smpte431", "smpte432", "linear", "iec61966-2-4", "bt1361e", "iec61966-2-1", "bt2020-10",
     "bt2020-12", "smpte2084", "arib-std-b67", "gbr", "fcc", "ycgco", "bt2020nc", "bt2020c",
     "smpte2085", "chroma-derived-nc", "chroma-derived-c", "ictcp"}
)  # fmt: skip
SVT_PRIMARIES = {"bt709": "bt709", "bt470m": "bt470m", "bt470bg": "bt470bg",
                 "smpte170m": "bt601", "smpte240m": "smpte240", "film": "film",
                 "bt2020": "bt2020", "smpte428": "xyz", "smpte431": "smpte431",
                 "smpte432": "smpte432", "ebu3213": "ebu3213"}  # fmt: skip
SVT_TRANSFERS = {"bt709": "bt709", "gamma22": "bt470m", "gamma28": "bt470bg",
                 "smpte170m": "bt601", "smpte240m": "smpte240", "linear": "linear",
                 "iec61966-2-4": "iec61966", "bt1361e": "bt1361", "iec61966-2-1": "srgb",
                 "bt2020-10": "bt2020-10", "bt2020-12": "bt2020-12", "smpte2084": "smpte2084",
                 "smpte428": "smpte428", "arib-std-b67": "hlg"}  # fmt: skip
SVT_MATRICES = {"bt709": "bt709", "fcc": "fcc", "bt470bg": "bt470bg", "smpte170m": "bt601",
                "smpte240m": "smpte240", "ycgco": "ycgco", "bt2020nc": "bt2020-ncl",
                "bt2020c": "bt2020-cl", "smpte2085": "smpte2085", "ictcp": "ictcp"}  # fmt: skip


def _x265_colour(s: EncoderSettings) -> list[str]:
    """VUI tags and HDR10 SEI for x265: ST 2086 chromaticities in 1/50000, luminance in
    1/10000 cd/m2 (x265's units); headers on every keyframe so each segment stands alone."""
    params = []
    for key, value in (("colorprim", s.color_primaries), ("transfer", s.color_transfer),
                       ("colormatrix", s.color_matrix)):  # fmt: skip
        name = X265_NAMES.get(value or "", value)
        if name in X265_KNOWN:
            params.append(f"{key}={name}")
    if any((s.color_primaries, s.color_transfer, s.color_matrix)):
        params.append("range=limited")
    if m := s.mastering_display:

        def xy(point: tuple[float, float]) -> str:
            return f"({round(point[0] * 50000)},{round(point[1] * 50000)})"

        params.append(
            f"master-display=G{xy(m.green)}B{xy(m.blue)}R{xy(m.red)}WP{xy(m.white_point)}"
            f"L({round(m.max_luminance * 10000)},{round(m.min_luminance * 10000)})"
        )
    if c := s.content_light:
        params.append(f"max-cll={c.max_cll},{c.max_fall}")
    if s.mastering_display or s.content_light:
        params.append("hdr10=1")
    if s.color_transfer == "smpte2084":
        params.append("hdr10-opt=1")
    # No repeat-headers: under the hvc1 tag the parameter sets live in the sample entry only
    # (ISO/IEC 14496-15), and every fMP4 segment's init segment carries them.
    return params


def _svtav1_colour(s: EncoderSettings) -> list[str]:
    """SVT-AV1's spelling: its own colour names, chromaticities and luminance as decimals."""
    params = []
    for key, value, table in (
        ("color-primaries", s.color_primaries, SVT_PRIMARIES),
        ("transfer-characteristics", s.color_transfer, SVT_TRANSFERS),
        ("matrix-coefficients", s.color_matrix, SVT_MATRICES),
    ):
        if value in table:
            params.append(f"{key}={table[value]}")
    if any((s.color_primaries, s.color_transfer, s.color_matrix)):
        params.append("color-range=studio")
    if m := s.mastering_display:

        def xy(point: tuple[float, float]) -> str:
            return f"({point[0]:.4f},{point[1]:.4f})"

        params.append(
            f"mastering-display=G{xy(m.green)}B{xy(m.blue)}R{xy(m.red)}WP{xy(m.white_point)}"
            f"L({m.max_luminance:.4f},{m.min_luminance:.4f})"
        )
    if c := s.content_light:
        params.append(f"content-light={c.max_cll},{c.max_fall}")
    return params


def _encoder_options(
    rendition: Rendition, mode: EncodeMode, on_gpu: bool, threads: int
) -> dict[str, object]:
    s = rendition.settings
    encoder = encoder_name(rendition, mode)
    ten_bit = "10" in s.pix_fmt
    opts: dict[str, object] = {
        "c:v": encoder,
        "b:v": f"{s.bitrate_kbps}k",
        "g": s.gop_frames,
        "keyint_min": s.gop_frames,
        "r": s.frame_rate,
        "fps_mode": "cfr",
        "an": None,
        "sn": None,
        "dn": None,
        "map_metadata": -1,
        "f": "mp4",
    }
    if not (mode == "nvenc" and on_gpu):
        # NVENC takes 10-bit as P010 (its only 4:2:0 10-bit layout)
        opts["pix_fmt"] = "p010le" if mode == "nvenc" and ten_bit else s.pix_fmt
    tags = {"color_primaries": s.color_primaries, "color_trc": s.color_transfer,
            "colorspace": s.color_matrix}  # fmt: skip
    opts |= {k: v for k, v in tags.items() if v}
    opts["color_range"] = "tv"
    if s.maxrate_kbps and s.bufsize_kbps:
        opts |= {"maxrate": f"{s.maxrate_kbps}k", "bufsize": f"{s.bufsize_kbps}k"}
    if threads and mode != "nvenc":
        opts["threads"] = threads
    if mode == "nvenc":
        # NVENC's VBR with the same target/maxrate/buffer; IDR at every GOP start, no extra
        # keyframes at scene cuts, so segments align with the software renditions. HDR10
        # SEI: hevc_nvenc/av1_nvenc take the source's ST 2086 / CLL from the frames' side
        # data (untested here: no NVENC at hand).
        opts |= {"preset": "p5", "tune": "hq", "rc": "vbr", "forced-idr": 1,
                 "strict_gop": 1, "no-scenecut": 1}  # fmt: skip
        if rendition.codec == "hevc" and ten_bit:
            opts["profile:v"] = "main10"
    elif s.encoder == "libx264":
        # a53cc off: captions are not carried (and reported so), not half-carried in H.264 SEI
        opts |= {"preset": s.preset, "sc_threshold": 0, "profile:v": "high", "a53cc": 0,
                 "x264-params": "open-gop=0"}  # fmt: skip
    elif s.encoder == "libx265":
        params = [f"keyint={s.gop_frames}", f"min-keyint={s.gop_frames}", "scenecut=0",
                  "open-gop=0", *_x265_colour(s), "log-level=error"]  # fmt: skip
        # forced-idr: libx265 makes a forced keyframe (-force_key_frames: a chunk's segment
        # grid) a plain I frame unless told, which is no keyframe to the muxer or a player:
        # chunked HEVC segments then ran 7 s / 3 s on a 4 s grid.
        opts |= {"preset": s.preset, "tag:v": "hvc1", "forced-idr": 1,
                 "x265-params": ":".join(params)}  # fmt: skip
        if ten_bit:
            opts["profile:v"] = "main10"
    elif s.encoder == "libsvtav1":
        params = ["scd=0", "enable-overlays=0", *_svtav1_colour(s)]
        opts |= {"preset": s.preset, "svtav1-params": ":".join(params)}
    if mode == "nvenc" and rendition.codec == "hevc":
        opts["tag:v"] = "hvc1"
    return opts


def _option_args(opts: dict[str, object]) -> list[str]:
    args: list[str] = []
    for key, value in opts.items():
        args.append(f"-{key}")
        if value is not None:
            args.append(str(value))
    return args


def _input_filters(
    renditions: Sequence[Rendition], neighbours: Neighbours | None
) -> tuple[list[str], str]:
    """The filter chains before the split, and the label of the stream they end in.

    Deinterlacing is per job, so it runs once, before the split. With ``neighbours`` (a chunk
    of an interlaced title) the previous chunk's last frame and the next's first are joined
    around the chunk, deinterlaced with it, then trimmed off by frame count: the chunk's
    output has exactly its own frames (twice as many at field rate), timed from zero."""
    first = renditions[0].settings
    if any((r.settings.deinterlace, r.settings.field_order) !=
           (first.deinterlace, first.field_order) for r in renditions):  # fmt: skip
        raise ValueError("renditions sharing a decode must deinterlace alike")
    if not first.deinterlace:
        return [], "0:v:0"
    bwdif = deinterlace_filter(first)
    if neighbours is None or (neighbours.before is None and neighbours.after is None):
        return [f"[0:v:0]{bwdif}[deint]"], "deint"
    chains, segments = [], []
    if neighbours.before is not None:
        chains.append(f"[{neighbours.before}:v:0]reverse,trim=end_frame=1,reverse,"
                      "setpts=PTS-STARTPTS[before]")  # fmt: skip
        segments.append("[before]")
    chains.append("[0:v:0]setpts=PTS-STARTPTS[chunk]")
    segments.append("[chunk]")
    if neighbours.after is not None:
        chains.append(f"[{neighbours.after}:v:0]trim=end_frame=1,setpts=PTS-STARTPTS[after]")
        segments.append("[after]")
    per_frame = 2 if first.deinterlace == "field" else 1
    start = per_frame if neighbours.before is not None else 0
    end = start + per_frame * neighbours.frames
    chains.append(
        f"{''.join(segments)}concat=n={len(segments)}:v=1:a=0,{bwdif},"
        f"trim=start_frame={start}:end_frame={end},setpts=PTS-STARTPTS[deint]"
    )
    return chains, "deint"


def video_output_args(
    renditions: list[tuple[Rendition, Path]],
    *,
    mode: EncodeMode = "cpu",
    rotation: int = 0,
    threads: int = 0,
    keyframes_s: list[float] | None = None,
    neighbours: Neighbours | None = None,
    copies: Sequence[int] = (),
) -> list[str]:
    """Encoder arguments with a fixed, closed GOP: every rendition has keyframes at the same
    instants (one per segment), so the packaged streams switch cleanly.

    Several renditions share one decode (``split``, then a scale per rung). The bitrate, VBV
    and GOP come from the plan whatever the mode, so a rendition is the same stream whether
    it ran on a CPU, an NVENC or a CUDA worker; only the encoder differs. ``keyframes_s``
    forces keyframes at those instants too (a chunk's start and the title's segment grid).
    The filters per rendition follow its settings: deinterlace (once, before the split),
    scale, tone-map (only the branches that need it), SAR; then its colour tags. With
    ``copies`` (a pipe's write end per output), each output is a ``tee``: the MP4 file, and
    the very same packets into the pipe (``CHECK_FORMATS``), for a decode check alongside.
    """
    plain = [r for r, _ in renditions]
    on_gpu = mode != "cpu" and rotation == 0 and not software_frames(plain)
    chains, label = _input_filters(plain, neighbours)
    branches = [label]
    if len(renditions) > 1:
        branches = [f"s{i}" for i in range(len(renditions))]
        chains.append(f"[{label}]split={len(renditions)}" + "".join(f"[{b}]" for b in branches))
    args: list[str] = []
    for i, (rendition, out) in enumerate(renditions):
        chains.append(
            f"[{branches[i]}]" + ",".join(_branch_filters(rendition, on_gpu, mode)) + f"[o{i}]"
        )
        opts = _encoder_options(rendition, mode, on_gpu, threads)
        if keyframes_s:
            opts["force_key_frames"] = ",".join(f"{t:g}" for t in keyframes_s)
        target = str(out)
        if copies:
            if set(target) & set("|[]\\'"):
                raise ValueError(f"{target!r}: not a path the tee muxer can name")
            opts["f"] = "tee"
            check = CHECK_FORMATS[rendition.codec]
            target = f"[f=mp4:onfail=abort]{target}|[f={check}:onfail=abort]pipe:{copies[i]}"
        args += ["-map", f"[o{i}]", *_option_args(opts), target]
    return ["-filter_complex", ";".join(chains), *args]


class EncoderBase(ActivityBase):
    """Encodes on this worker's hardware: ``mode`` is what the queue it serves promises,
    ``threads`` the encoder threads per process that the worker's concurrency leaves."""

    def __init__(self, settings: Settings, mode: EncodeMode = "cpu", threads: int = 0) -> None:
        super().__init__(settings)
        self.mode = mode
        self.threads = threads

    def _check_threads(self, decoders: int) -> str:
        """The encoder's threads shared by the decoders that check it: at least one each."""
        return str(max(1, (self.threads or 1) // max(1, decoders)))

    async def encode_checked(
        self,
        in_args: list[str],
        outputs: list[tuple[Rendition, Path]],
        total_s: float,
        label: str,
        *,
        metric: str | None = None,
        **video: Any,
    ) -> str | None:
        """Encode ``outputs`` and decode every packet as it is muxed; why it does not decode,
        or None.

        Each output is teed (see :func:`video_output_args`): the MP4 file, and the same
        packets through a pipe into a decoder of its own (``-xerror``, every slice
        entropy-decoded, as :meth:`decode_problem`), which then runs on the cores the encoder
        leaves idle instead of after it. The file must then hold exactly the frames that
        decoded. A decoder that fails closes its pipe, which stops the encoder ("Broken pipe":
        then the decoder's error is the reason)."""
        pipes = [os.pipe() for _ in outputs]
        decoded: list[int | None] = [None] * len(outputs)
        threads = self._check_threads(len(outputs))

        def counted(i: int) -> Callable[[Progress], None]:
            return lambda p: decoded.__setitem__(i, p.frames)

        async def check(i: int, read: int) -> None:
            await run_ffmpeg(
                ["-xerror", "-skip_loop_filter", "all", "-threads", threads,
                 "-protocol_whitelist", "pipe", "-f", CHECK_FORMATS[outputs[i][0].codec],
                 "-i", "pipe:0",
                 "-map", "0:v:0", "-f", "null", "-"],
                binary=ffmpeg_binary(self.settings.ffmpeg_path), total_s=total_s,
                stall_timeout_s=self.settings.heartbeat_timeout_s, on_progress=counted(i),
                label=f"check {outputs[i][0].name}", stdin=read,
            )  # fmt: skip

        writes = [w for _, w in pipes]
        try:
            out_args = video_output_args(outputs, mode=self.mode, threads=self.threads,
                                         copies=writes, **video)  # fmt: skip
        except BaseException:
            for fd in [*writes, *(r for r, _ in pipes)]:
                os.close(fd)
            raise
        results = await asyncio.gather(
            self.ffmpeg(["-y", *in_args, *out_args], total_s=total_s, label=label,
                        metric=metric, pass_fds=writes),
            *(check(i, r) for i, (r, _) in enumerate(pipes)),
            return_exceptions=True,
        )  # fmt: skip
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: both were killed
        encoded, *checked = results
        failed = [(o[0].name, r) for o, r in zip(outputs, checked, strict=True) if r]
        # The encoder's own failure is the reason, unless it only lost a decoder's pipe.
        if isinstance(encoded, Exception) and not (failed and "Broken pipe" in str(encoded)):
            raise encoded
        if failed:
            name, err = failed[0]
            return f"{name} does not decode ({err})"
        counted_frames = await asyncio.gather(
            *(asyncio.to_thread(count_frames, path) for _, path in outputs)
        )
        for (rendition, _), frames, (written, _) in zip(
            outputs, decoded, counted_frames, strict=True
        ):
            if frames != written:
                return f"{rendition.name}: {written} frames written, {frames} decoded"
        return None

    async def decode_problem(
        self, paths: list[Path], total_s: float, label: str, *, keyframes_only: bool = False
    ) -> str | None:
        """Why these videos do not decode (one ffmpeg, stopping at the first error), or None.

        Every slice of every frame is entropy-decoded and reconstructed (a corrupt or
        truncated stream fails); only the deblocking filter is skipped, which changes pixels
        but parses nothing, and saves about a quarter of the check's CPU. The decoders share
        the encoder's threads: one each when several files are checked at once."""
        skip = ["-skip_frame", "nokey"] if keyframes_only else []
        threads = self._check_threads(len(paths))
        args = ["-xerror"]
        for path in paths:
            args += [*skip, "-skip_loop_filter", "all", "-threads", threads,
                     *input_args(path, "mov")]  # fmt: skip
        for i in range(len(paths)):
            args += ["-map", f"{i}:v:0"]
        try:
            await self.ffmpeg([*args, "-f", "null", "-"], total_s=total_s, label=label,
                              metric="check", encodes=False)  # fmt: skip
        except ApplicationError as err:
            return f"it does not decode ({err.message})"
        return None


class EncodeActivities(EncoderBase):
    """Renditions in one piece: titles not chunked (see ``chunk_decision``)."""

    @activity.defn(name="encode_renditions")
    async def encode_renditions(self, input: EncodeRenditionsInput) -> list[EncodedMedia]:
        """Every rendition of a codec from one decode of the source, as the best single
        ffmpeg command would; each decoded in full before it is placed (unless the job's
        quality pass does that), so what lands in scratch is whole. A retry encodes only
        the renditions not placed yet."""
        names = [r.name for r in input.renditions]
        targets = {n: join(input.scratch_uri, input.job_id, f"video/{n}.mp4") for n in names}
        placed = {n: await asyncio.to_thread(store_for(t, self.settings).exists, t)
                  for n, t in targets.items()}  # fmt: skip
        todo = [r for r in input.renditions if not placed[r.name]]
        if todo:
            parts = {r.name: part_path(self.scratch_path(targets[r.name], input.job_id))
                     for r in todo}  # fmt: skip
            for part in parts.values():
                part.parent.mkdir(parents=True, exist_ok=True)
            src = await self.local_source(input.source_uri, input.job_id)
            in_args = [*hwaccel_args(self.mode, input.rotation, todo),
                       *input_args(src, input.container)]  # fmt: skip
            label = "+".join(r.name for r in todo)  # the job view splits it per rendition
            outputs = [(r, parts[r.name]) for r in todo]
            with discarded_on_error(*parts.values()):
                if input.decode_check:
                    problem = await self.encode_checked(in_args, outputs, input.duration_s,
                                                        label, rotation=input.rotation)  # fmt: skip
                    if problem:  # retried: a fresh encode, the broken one discarded
                        raise ApplicationError(f"{label} was encoded wrong: {problem}")
                else:
                    out_args = video_output_args(outputs, mode=self.mode, threads=self.threads,
                                                 rotation=input.rotation)  # fmt: skip
                    await self.ffmpeg(["-y", *in_args, *out_args], total_s=input.duration_s,
                                      label=label)  # fmt: skip
            for r in todo:
                await self.place(parts[r.name], targets[r.name], input.job_id)
        queue = activity.info().task_queue

        async def stored(rendition: Rendition) -> EncodedMedia:
            target = targets[rendition.name]
            out = await self.fetch(target, input.job_id)
            media = await media_of(rendition.name, target, out, queue=queue,
                                   encoder=encoder_name(rendition, self.mode))  # fmt: skip
            self.drop_copy(target, input.job_id)
            return media

        # read back side by side: the cores the encode used are idle now
        return list(await asyncio.gather(*(stored(r) for r in input.renditions)))

    @activity.defn(name="encode_video")
    async def encode_video(self, input: EncodeVideoInput) -> EncodedMedia:
        """One rendition (side by side with the others on a pool of several slots, and the
        pipeline's ``encode`` function): ``encode_renditions`` of one."""
        fields = input.model_dump(exclude={"rendition"})
        request = EncodeRenditionsInput(**fields, renditions=[input.rendition])
        (media,) = await self.encode_renditions(request)
        return media
