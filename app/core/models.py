"""Shared models: the API's bodies and every workflow/activity payload (only URIs, never bytes)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    field_validator,
    model_validator,
)

Codec = Literal["h264", "hevc", "av1"]
Accelerator = Literal["auto", "cpu", "gpu"]
ProfileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]
Language = Annotated[
    str,
    Field(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        description="ISO 639 language code (BCP 47 subtags allowed), e.g. eng, fra, pt-BR.",
    ),
]
Title = Annotated[
    str,
    Field(
        max_length=128,
        pattern=r'^[^"\x00-\x1f\x7f]+$',
        description="What players show for the track; no double quotes or control characters.",
    ),
]
TrackName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A rendition's name: it names files in the package."""
DynamicRange = Literal["SDR", "HDR10", "HLG", "DolbyVision"]
FieldOrder = Literal["progressive", "tff", "bff"]
DeinterlaceMode = Literal["auto", "on", "off"]
DeinterlaceRate = Literal["frame", "field"]
HdrMode = Literal["auto", "preserve", "tonemap"]
PixelAspect = Literal["square", "exact"]
VideoRange = Literal["SDR", "PQ", "HLG"]
"""HLS ``VIDEO-RANGE`` of an output: its transfer function's family."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- requests


class CustomProfile(Strict):
    """An inline rung; bounds keep a typo from asking for a 10 Gb/s or 1-pixel stream."""

    name: ProfileName
    height: int = Field(ge=144, le=4320, description="Short side of the picture, in pixels.")
    bitrate_kbps: int = Field(ge=64, le=100_000, description="Target video bitrate.")
    codec: Codec | None = Field(None, description="Defaults to the job's codec.")
    preset: str | None = Field(None, description="Encoder preset; the codec's default if unset.")


class SidecarAudio(Strict):
    """A dub or other audio track from its own file (checked like the video source)."""

    source: str = Field(min_length=1, max_length=4096, description="Path, file:// or s3:// URI.")
    language: Language
    title: Title | None = Field(None, description="The track's name in players.")


class AudioOptions(Strict):
    languages: list[Language] | None = Field(
        None,
        max_length=32,
        description="Source audio tracks to keep, by language; default: every track.",
    )
    default: Language | None = Field(
        None, description="Language of the default track; default: the source's default."
    )
    surround: bool = Field(
        False, description="Also a 5.1 rendition (E-AC-3) of tracks that have 5.1 or more."
    )
    loudness_lufs: float | None = Field(
        None,
        ge=-40,
        le=-5,
        description="Normalise every track to this integrated loudness (two-pass loudnorm), "
        "e.g. -23 (EBU R128) or -16 (streaming); off by default.",
    )
    tracks: list[SidecarAudio] = Field(
        default_factory=list, max_length=16, description="Audio tracks from other files."
    )


class SidecarSubtitle(Strict):
    source: str = Field(
        min_length=1, max_length=4096, description="A .srt or .vtt file (path or URI)."
    )
    language: Language
    forced: bool = Field(False, description="Shown only where the audio is in another language.")
    hearing_impaired: bool = Field(False, description="SDH: sound described as well as speech.")
    title: Title | None = Field(None, description="The track's name in players.")


class RetryOptions(Strict):
    max_attempts: int = Field(3, ge=1, le=20)
    initial_interval_s: float = Field(1.0, gt=0, le=300)


class ThumbnailOptions(Strict):
    """The thumbnail track: one thumbnail per interval, 5x5 to a JPEG sprite sheet."""

    interval_s: float = Field(
        2.0,
        ge=1,
        le=60,
        description="Seconds between thumbnails (to the millisecond); each shows the frame "
        "at the middle of its interval.",
    )
    width: int = Field(
        160,
        ge=64,
        le=640,
        multiple_of=2,
        description="Thumbnail width in pixels (even, at most the source's display width); "
        "the height follows the display aspect ratio, square pixels.",
    )


DEFAULT_CHUNK_SECONDS = 6.0
DEFAULT_MIN_CHUNK_SECONDS = 2.0
DEFAULT_WINDOW = 256


DEFAULT_PROFILES: tuple[ProfileName | CustomProfile, ...] = ("720p", "480p", "360p")

LadderMode = Literal["fixed", "auto"]
DEFAULT_MAX_RUNGS = 5
DEFAULT_TOP_VMAF = 95.0


class LadderOptions(Strict):
    """``ladder: auto``'s bounds (see the README's "Per-title ladders"). Unset bitrates follow
    the fixed ladder it replaces: ``max_kbps`` 1.5x its top rung (the fixed ladder's VBV
    peak), ``min_kbps`` half its lowest rung."""

    max_rungs: int = Field(
        DEFAULT_MAX_RUNGS,
        ge=1,
        le=12,
        description="At most this many rungs; fewer where more would not help (rungs closer "
        "than 3 VMAF points or a bitrate ratio of 1.5 are not made).",
    )
    min_kbps: int | None = Field(
        None,
        ge=64,
        le=100_000,
        description="Where the bottom rung sits (a network floor); default half the fixed "
        "ladder's lowest bitrate. A title that reaches top_vmaf below it gets one rung.",
    )
    max_kbps: int | None = Field(
        None,
        ge=64,
        le=100_000,
        description="No rung above it; default 1.5x the fixed ladder's top bitrate.",
    )
    top_vmaf: float = Field(
        DEFAULT_TOP_VMAF,
        ge=50,
        le=99,
        description="The top rung's VMAF (at the top rung's display size), unless max_kbps "
        "comes first.",
    )
    codec: Codec | None = Field(None, description="The auto ladder's codec; default the job's.")

    @field_validator("max_kbps")
    @classmethod
    def _maximum_above_minimum(cls, value: int | None, info: ValidationInfo) -> int | None:
        minimum = info.data.get("min_kbps")
        if value is not None and minimum is not None and value < minimum:
            raise ValueError(f"must be at least min_kbps ({minimum})")
        return value


class EncodeRequest(Strict):
    """Body of ``POST /v1/encode``."""

    source: str = Field(min_length=1, max_length=4096, description="Path, file:// or s3:// URI.")
    profiles: list[ProfileName | CustomProfile] = Field(
        default_factory=lambda: list(DEFAULT_PROFILES), min_length=1, max_length=12
    )
    codec: Codec = "h264"
    segment_seconds: int = Field(4, ge=1, le=10, description="HLS/DASH segment (and GOP) length.")
    accelerator: Accelerator = Field(
        "auto", description="auto: GPU encoders when a capable pool polls, else CPU."
    )
    webhook_url: HttpUrl | None = Field(
        None, description="Where the job's signed events are POSTed (see the README's Webhooks)."
    )
    webhook_secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        description="Signs this job's events instead of COSMOS_WEBHOOK_SECRET. It travels in the "
        "workflow's input: set COSMOS_PAYLOAD_KEYS so Temporal stores it encrypted.",
    )
    chunk_seconds: float | None = Field(
        None,
        ge=0,
        le=600,
        description="Target chunk length for parallel encoding (cut on source keyframes, "
        "scene cuts preferred); 0 never cuts. Omitted: chunks of "
        f"{DEFAULT_CHUNK_SECONDS:g} s where they pay (more than one encode slot polls, or a "
        "long title), else one decode for the whole ladder (manifest.json's `chunking`).",
    )
    min_chunk_seconds: float = Field(
        DEFAULT_MIN_CHUNK_SECONDS, ge=0.5, le=600, description="No chunk is shorter than this."
    )
    deinterlace: DeinterlaceMode = Field(
        "auto",
        description="auto: deinterlace (bwdif) when the stream's flags or idet say interlaced.",
    )
    deinterlace_rate: DeinterlaceRate = Field(
        "frame",
        description="frame: one frame per source frame (25p from 50i); field: one per field "
        "(50p from 50i).",
    )
    hdr: HdrMode = Field(
        "auto",
        description="auto: HDR kept (10-bit, metadata) in HEVC/AV1, tone-mapped to BT.709 SDR "
        "in H.264; preserve: refuse a rendition that cannot keep it; tonemap: SDR everywhere.",
    )
    pixel_aspect: PixelAspect = Field(
        "square",
        description="square: square pixels (SAR 1:1, as HLS authoring asks and players that "
        "ignore SAR need), the width rounded so the display aspect moves at most 0.5%; exact: "
        "the source's exact display aspect, a non-square SAR absorbing the rounding.",
    )
    audio: AudioOptions = Field(
        default_factory=AudioOptions,
        description="Audio tracks: every source track as AAC stereo by default; languages, "
        "default, surround, loudness and dubs from other files.",
    )
    subtitles: list[SidecarSubtitle] = Field(
        default_factory=list, max_length=32, description="Subtitle files to add (SRT or WebVTT)."
    )
    program_date_time: AwareDatetime | None = Field(
        None,
        description="Wall-clock time of the first frame (an archived live event): the HLS "
        "media playlists then carry EXT-X-PROGRAM-DATE-TIME; a VOD title leaves it out.",
    )
    thumbnails: ThumbnailOptions | Literal[False] = Field(
        default_factory=ThumbnailOptions,
        description="Trick-play thumbnails (JPEG sprite sheets with a WebVTT index, an HLS "
        "image playlist and a DASH-IF thumbnail set) and a poster.jpg; false: neither.",
    )
    quality: QualityOptions | None = Field(
        None,
        description="VMAF, PSNR and/or SSIM of every rendition against the source, in "
        "manifest.json and the job status; default: not measured.",
    )
    ladder: LadderMode = Field(
        "fixed",
        description="fixed: the profiles as given; auto: a per-title ladder from an analysis "
        "of this title (samples encoded at the profiles' resolutions, VMAF, convex hull).",
    )
    ladder_options: LadderOptions = Field(
        default_factory=LadderOptions, description="ladder auto's bounds (only with auto)."
    )

    @field_validator("profiles")
    @classmethod
    def _unique_names(cls, value: list[str | CustomProfile]) -> list[str | CustomProfile]:
        names = [p if isinstance(p, str) else p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate profiles: {', '.join(dupes)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _short_chunks_lower_the_minimum(cls, data: object) -> object:
        """Asking for 1 s chunks without naming a minimum means a minimum that allows them."""
        if isinstance(data, dict) and "min_chunk_seconds" not in data:
            target = data.get("chunk_seconds")
            if isinstance(target, int | float) and 0 < target < DEFAULT_MIN_CHUNK_SECONDS:
                return {**data, "min_chunk_seconds": max(0.5, target / 2)}
        return data

    @field_validator("min_chunk_seconds")
    @classmethod
    def _minimum_within_target(cls, value: float, info: ValidationInfo) -> float:
        target = info.data.get("chunk_seconds")
        if target and value > target:
            raise ValueError(f"must not exceed chunk_seconds ({target:g})")
        return value


class EncodeJob(Strict):
    """The workflow's input: a validated request with the source resolved to a URI."""

    job_id: str
    source_uri: str
    profiles: list[ProfileName | CustomProfile]
    codec: Codec
    segment_seconds: int
    webhook_url: str | None = None
    webhook_secret: str | None = None
    """None: the workers' COSMOS_WEBHOOK_SECRET signs."""
    webhook_retry_hours: float = Field(24.0, gt=0, le=720)
    webhook_progress_step: int = Field(10, ge=1, le=100, description="Percent between events.")
    output_uri: str
    scratch_uri: str
    retry: RetryOptions = RetryOptions()
    heartbeat_timeout_s: float = Field(30.0, gt=0, le=3600)
    accelerator: Accelerator = "auto"
    gpu_schedule_to_start_s: float = Field(60.0, gt=0, le=3600)
    chunk_seconds: float = 0.0
    chunk_auto: bool = Field(
        False, description="chunk_seconds was not asked: chunk only where it pays."
    )
    min_chunk_seconds: float = DEFAULT_MIN_CHUNK_SECONDS
    window: int = Field(DEFAULT_WINDOW, ge=1, le=1000, description="Chunk tasks in flight.")
    deinterlace: DeinterlaceMode = "auto"
    deinterlace_rate: DeinterlaceRate = "frame"
    hdr: HdrMode = "auto"
    pixel_aspect: PixelAspect = "square"
    audio: AudioOptions = AudioOptions()
    subtitles: list[SidecarSubtitle] = []
    """Sidecar sources here are resolved URIs, checked by the API."""
    thumbnails: ThumbnailOptions | None = Field(
        None, description="None: no thumbnails or poster (and jobs from before them)."
    )
    program_date_time: AwareDatetime | None = None
    quality: QualityOptions | None = None
    ladder: LadderMode = "fixed"
    """auto: ``profiles`` are the fixed ladder until the per-title analysis replaces them."""
    ladder_options: LadderOptions = LadderOptions()


# ---------------------------------------------------------------- probe and plan


class MasteringDisplay(Strict):
    """SMPTE ST 2086: chromaticities as CIE 1931 x, y; luminance in cd/m2."""

    red: tuple[float, float]
    green: tuple[float, float]
    blue: tuple[float, float]
    white_point: tuple[float, float]
    max_luminance: float
    min_luminance: float


class ContentLight(Strict):
    max_cll: int = Field(description="Maximum content light level, cd/m2.")
    max_fall: int = Field(description="Maximum frame-average light level, cd/m2.")


class VideoInfo(Strict):
    codec: str
    width: int
    height: int
    sample_aspect_ratio: str = Field(description="num:den")
    display_aspect_ratio: str = Field(description="num:den, after SAR and rotation")
    rotation: int = Field(description="Degrees the picture is displayed rotated: 0/90/180/270.")
    frame_rate: str = Field(description="Exact rational, e.g. 30000/1001.")
    pix_fmt: str | None = None
    display_width: int
    display_height: int
    index: int = Field(0, description="Stream index in the file.")
    profile: str | None = None
    bit_depth: int | None = None
    chroma_format: str | None = Field(None, description="4:2:0, 4:2:2, 4:4:4 or 4:0:0.")
    field_order: FieldOrder | None = Field(
        None, description="What the stream says; None where it says nothing."
    )
    measured_field_order: FieldOrder | None = Field(
        None, description="What ffmpeg's idet measured over the first frames."
    )
    interlaced: bool = Field(False, description="The conclusion: flags, or idet where they lie.")
    color_primaries: str | None = None
    color_transfer: str | None = None
    color_matrix: str | None = None
    color_range: str | None = Field(None, description="tv (limited) or pc (full).")
    dynamic_range: DynamicRange = "SDR"
    mastering_display: MasteringDisplay | None = None
    content_light: ContentLight | None = None
    variable_frame_rate: bool = False
    timecode: str | None = None
    closed_captions: bool = Field(False, description="CEA-608/708 captions in the video.")


class AudioInfo(Strict):
    codec: str
    channels: int
    channel_layout: str
    sample_rate: int
    index: int = Field(0, description="Stream index in the file.")
    language: str | None = None
    title: str | None = None
    default: bool = False
    forced: bool = False


class SubtitleInfo(Strict):
    index: int = Field(description="Stream index in the file.")
    codec: str
    text: bool = Field(description="Text (carried as WebVTT) or image (reported, not carried).")
    language: str | None = None
    title: str | None = None
    default: bool = False
    forced: bool = False
    hearing_impaired: bool = False


class OtherStream(Strict):
    """A data or attachment stream: never encoded, always reported."""

    index: int
    type: str
    codec: str


class ProbeResult(Strict):
    container: str
    duration_s: float
    size_bytes: int
    video: VideoInfo
    audio: AudioInfo | None = Field(description="The first audio stream (every one is below).")
    streams: list[str] = Field(description="One short line per stream, for people.")
    audio_streams: list[AudioInfo] = []
    subtitles: list[SubtitleInfo] = []
    other_streams: list[OtherStream] = []
    timecode: str | None = Field(None, description="Start timecode (stream or container).")


class NotCarried(Strict):
    """A source stream (or part of one) the outputs do not carry, and why."""

    stream: str = Field(description="e.g. '#3 subtitle hdmv_pgs_subtitle (eng)'.")
    kind: str = Field(description="audio, subtitle, captions, data or attachment.")
    reason: str


class EncoderSettings(Strict):
    encoder: str
    preset: str
    rate_control: str
    bitrate_kbps: int
    maxrate_kbps: int | None = Field(
        None, description="VBV peak; None where the encoder has no VBV"
    )
    bufsize_kbps: int | None = None
    gop_frames: int
    closed_gop: bool = True
    frame_rate: str
    pix_fmt: str = "yuv420p"
    color_primaries: str | None = Field(None, description="As ffmpeg names them, e.g. bt2020.")
    color_transfer: str | None = Field(None, description="e.g. bt709, smpte2084, arib-std-b67.")
    color_matrix: str | None = Field(None, description="e.g. bt709, bt2020nc.")
    mastering_display: MasteringDisplay | None = None
    content_light: ContentLight | None = None
    deinterlace: DeinterlaceRate | None = Field(
        None, description="bwdif at frame or field rate; None for progressive sources."
    )
    field_order: Literal["tff", "bff"] | None = Field(
        None, description="The parity bwdif is told (measured, not trusted from flags)."
    )
    tonemap: bool = Field(False, description="HDR source tone-mapped to BT.709 SDR.")
    tonemap_from: str | None = Field(
        None,
        description="The source transfer the tone-mapper reads (smpte2084 or arib-std-b67), "
        "not the frames' tags: a source may be untagged or tagged wrong.",
    )


class Rendition(Strict):
    name: str
    codec: Codec
    width: int
    height: int
    sample_aspect_ratio: str
    settings: EncoderSettings
    video_range: VideoRange = "SDR"
    display_aspect_change: float = Field(
        0.0,
        description="The rendition's display aspect relative to the source's, minus 1 "
        "(-0.0016: 0.16% narrower), from square-pixel rounding; at most 0.005 either way. "
        "0 with a non-square sample_aspect_ratio: the exact fit (pixel_aspect exact, or no "
        "square size within 0.5% for this rung).",
    )


class AudioRendition(Strict):
    """One audio output: a source track (``source_index``) or a sidecar file."""

    name: TrackName = Field(description="e.g. audio-en, audio-fr-2, audio-en-51.")
    source_uri: str | None = Field(None, description="A sidecar file; None: the job's source.")
    source_index: int = Field(
        0, description="Stream index within that file; -1: its first audio stream (sidecars)."
    )
    container: str | None = None
    language: str = "und"
    title: str | None = None
    default: bool = False
    codec: Literal["aac", "eac3"] = "aac"
    channels: int = 2
    bitrate_kbps: int = 128
    sample_rate: int = 48000
    loudness_lufs: float | None = None


class SubtitleRendition(Strict):
    """One subtitle output (WebVTT): an embedded text stream or a sidecar file."""

    name: TrackName = Field(description="e.g. sub-en, sub-fr-forced.")
    source_uri: str | None = Field(None, description="A sidecar file; None: the job's source.")
    source_index: int | None = Field(None, description="Stream index of an embedded track.")
    codec: str = Field(description="Source format: subrip, webvtt, mov_text, ass, ...")
    language: str = "und"
    title: str | None = None
    default: bool = False
    forced: bool = False
    hearing_impaired: bool = False


class DroppedProfile(Strict):
    name: str
    reason: str


class Plan(Strict):
    renditions: list[Rendition]
    dropped: list[DroppedProfile]
    segment_seconds: int
    audio: list[AudioRendition] | None = Field(
        None, description="None: plans from before audio tracks (the first track, as AAC)."
    )
    subtitles: list[SubtitleRendition] = []
    not_carried: list[NotCarried] = []


# ---------------------------------------------------------------- activity inputs and outputs


class ProbeInput(Strict):
    source_uri: str
    job_id: str = "probe"
    keep_copy: bool = Field(
        True,
        description="Keep a downloaded (S3) source on the worker for the job's next steps; "
        "an inspection keeps nothing.",
    )


class PlanInput(Strict):
    job: EncodeJob
    probe: ProbeResult


class WholeSourceInput(Strict):
    """Encodes of the whole source (a title not chunked)."""

    job_id: str
    source_uri: str
    container: str
    scratch_uri: str
    duration_s: float
    rotation: int = 0
    decode_check: bool = Field(
        True, description="False where the job's quality pass decodes every frame instead."
    )


class EncodeVideoInput(WholeSourceInput):
    rendition: Rendition


class EncodeRenditionsInput(WholeSourceInput):
    """Renditions of one codec from one decode."""

    renditions: list[Rendition]


class EncodeAudioInput(Strict):
    job_id: str
    source_uri: str
    container: str
    scratch_uri: str
    duration_s: float
    track: AudioRendition | None = Field(
        None, description="None: histories from before audio tracks (first track, AAC stereo)."
    )


class Loudness(Strict):
    """EBU R128 figures as loudnorm measured them."""

    integrated_lufs: float
    true_peak_dbtp: float
    lra_lu: float
    threshold_lufs: float | None = None


class LoudnessReport(Strict):
    target_lufs: float
    measured: Loudness = Field(description="The source track, first pass.")
    output: Loudness = Field(description="The normalised output, second pass.")


class EncodedMedia(Strict):
    """One encoded elementary stream in scratch storage, before packaging."""

    name: str
    uri: str
    size_bytes: int
    duration_s: float
    frames: int
    checksum: str
    encoder: str | None = None
    queue: str | None = None
    loudness: LoudnessReport | None = None


class SubtitleInput(Strict):
    job_id: str
    source_uri: str = Field(description="The job's source, or the sidecar file.")
    container: str | None = Field(None, description="The probed demuxer of the job's source.")
    scratch_uri: str
    track: SubtitleRendition
    duration_s: float


class SubtitleMedia(Strict):
    """A subtitle track as one WebVTT file in scratch, before packaging."""

    name: str
    uri: str
    cues: int
    size_bytes: int


class ThumbnailInput(Strict):
    job_id: str
    source_uri: str
    container: str
    scratch_uri: str
    duration_s: float
    video: VideoInfo
    rendition: Rendition = Field(
        description="The top rung: the poster's size, the deinterlacing and (HDR) the "
        "transfer to tone-map from."
    )
    options: ThumbnailOptions


class ThumbnailMedia(Strict):
    """The thumbnail sheets and the poster in scratch (``uri`` is their folder), before
    packaging; with the tiling they were made by (see ``app.media.thumbnails.TilePlan``)."""

    uri: str
    sheets: list[str] = Field(description="File names, in order: sheet-00001.jpg, ...")
    poster: str
    interval_s: float
    duration_s: float = Field(description="What the thumbnails cover: the last cue ends here.")
    tile_width: int
    tile_height: int
    columns: int
    rows: int
    count: int = Field(description="Thumbnails: ceil(duration / interval).")
    poster_width: int
    poster_height: int
    poster_at_s: float = Field(description="The poster frame's time in the source.")


class RouteInput(Strict):
    codecs: list[Codec]
    accelerator: Accelerator


class Route(Strict):
    """Where the encodes of one codec go, and why."""

    codec: Codec
    queue: str
    mode: Literal["cpu", "nvenc", "cuda"]
    reason: str
    slots: int | None = Field(
        None, description="Encode slots of the workers polling the queue now; None: unknown."
    )


class ChunkDecision(Strict):
    """Whether a job's video is cut into chunks, and why: ``manifest.json``'s ``chunking``."""

    chunked: bool
    reason: str
    slots: int | None = Field(None, description="Encode slots that polled when it was decided.")
    chunk_seconds: float = Field(description="The target chunk length (unused when whole).")


class SplitInput(Strict):
    job_id: str
    source_uri: str
    container: str
    scratch_uri: str
    duration_s: float
    chunk_seconds: float
    min_chunk_seconds: float
    segment_seconds: int = Field(description="Cuts prefer this grid: they add no keyframe.")


class ChunkPlan(Strict):
    """Where the source was cut. Chunk ``i`` is ``<scratch>/<job>/chunks/<i:05d>.mp4``, from
    ``starts_s[i]`` to the next start (or ``duration_s``): only numbers travel, never a path list,
    so the plan of a two-hour title stays a few kilobytes."""

    starts_s: list[float]
    duration_s: float
    frames: int = Field(description="Video frames of the source, summed over the chunks.")
    scene_cuts: int = Field(description="Boundaries that fall on a detected scene cut.")

    @property
    def count(self) -> int:
        return len(self.starts_s)

    def chunk(self, index: int) -> Chunk:
        end = self.starts_s[index + 1] if index + 1 < self.count else self.duration_s
        start = self.starts_s[index]
        return Chunk(index=index, start_s=start, duration_s=round(end - start, 6))


class Chunk(Strict):
    index: int
    start_s: float = Field(description="Where the chunk starts in the source.")
    duration_s: float


class EncodeChunkInput(Strict):
    """One chunk, decoded once, encoded into every rendition of one codec."""

    job_id: str
    scratch_uri: str
    chunk: Chunk
    renditions: list[Rendition]
    segment_seconds: int
    rotation: int = 0
    decode_check: bool = Field(
        True, description="False where the job's quality pass decodes every frame instead."
    )


class ChunkOutput(Strict):
    name: str
    frames: int
    size_bytes: int
    checksum: str


class ChunkResult(Strict):
    index: int
    outputs: list[ChunkOutput]
    reused: bool = Field(description="Every output was already there, whole: nothing encoded.")
    encoder: str
    queue: str


class ChunkRangeInput(Strict):
    """A child workflow's share of the chunks: ``[first, last)`` for the renditions of a codec."""

    job: EncodeJob
    renditions: list[Rendition]
    route: Route | None
    chunks: list[Chunk]
    segment_seconds: int
    rotation: int
    window: int = Field(ge=1)


class ChunkRangeResult(Strict):
    """Totals only: the chunk outputs are found by their keys, not carried in the history."""

    codec: str
    chunks: int
    reused: int
    frames: dict[str, int]
    size_bytes: dict[str, int]
    queues: dict[str, int] = Field(description="Chunks encoded per task queue.")
    encoders: dict[str, str] = Field(description="Encoder per rendition.")
    peak_in_flight: int


class ChunkProgress(Strict):
    """Signal from a chunk-range child to its parent."""

    child_id: str
    codec: str
    done: int


class AssembleInput(Strict):
    job_id: str
    scratch_uri: str
    rendition: Rendition
    chunks: int
    expected_frames: int
    expected_duration_s: float


class PackageInput(Strict):
    job_id: str
    scratch_uri: str
    videos: list[EncodedMedia]
    audio: EncodedMedia | None = Field(description="Plans from before audio tracks only.")
    segment_seconds: int
    plan: Plan | None = Field(None, description="None: histories from before audio tracks.")
    audio_tracks: list[EncodedMedia] = Field(default_factory=list, description="Plan order.")
    subtitles: list[SubtitleMedia] = []
    thumbnails: ThumbnailMedia | None = None
    program_date_time: AwareDatetime | None = None
    audio_planned: bool = Field(
        True,
        description="The audio tracks were encoded to the plan's codec and channels (False: "
        "packaged as given, so validation does not hold them to the plan).",
    )


class PackagedThumbnails(Strict):
    """The thumbnail track and the poster as packaged (file names in the package)."""

    vtt: str
    hls_playlist: str
    sheets: list[str]
    interval_s: float
    tile: str = Field(description="One thumbnail's size, e.g. 160x90.")
    layout: str = Field(description="Columns x rows per sheet, e.g. 5x5.")
    count: int
    bandwidth: int = Field(description="Peak bits per second over the sheets.")
    poster: str
    poster_size: str = Field(description="e.g. 1280x720.")


class ValidationCheck(Strict):
    """One check of the validation pass over a package (``app.media.validation``)."""

    target: str = Field(description="The rendition or track checked, by name; or hls, dash.")
    check: str = Field(description="e.g. segments, size, codecs, frames, duration, colour.")
    ok: bool
    detail: str = Field("", description="What was measured, or what is wrong.")


class ValidationReport(Strict):
    """Every output read back before publishing: decodes, is what the plan asked, matches its
    encode; every manifest parses and names only files that are there, of the recorded size."""

    passed: bool
    checks: list[ValidationCheck]
    seconds: float = Field(description="Wall time of the pass.")

    @property
    def failures(self) -> list[ValidationCheck]:
        return [c for c in self.checks if not c.ok]


class PackageResult(Strict):
    staging_uri: str
    hls_master: str
    dash_manifest: str
    video_playlists: list[str]
    iframe_playlists: list[str] = Field(
        default_factory=list, description="I-frame playlist per video rendition (trick play)."
    )
    audio_playlist: str | None = Field(description="The default audio track's playlist.")
    checksums: dict[str, str] = Field(default_factory=dict, description="By representation id.")
    sizes: dict[str, int] = Field(default_factory=dict, description="Bytes by representation id.")
    audio_playlists: list[str] = Field(default_factory=list, description="Per audio track.")
    subtitle_playlists: list[str] = Field(default_factory=list, description="Per subtitle track.")
    subtitle_files: list[str] = Field(
        default_factory=list, description="Whole WebVTT per subtitle track (DASH)."
    )
    codecs: dict[str, str] = Field(
        default_factory=dict, description="RFC 6381 codecs string by representation id."
    )
    bandwidth: dict[str, int] = Field(
        default_factory=dict, description="Peak segment bit rate by representation id."
    )
    thumbnails: PackagedThumbnails | None = None
    validation: ValidationReport | None = Field(
        None, description="The validation pass; None: packages from before it ran."
    )


class PublishInput(Strict):
    job: EncodeJob
    probe: ProbeResult
    plan: Plan
    videos: list[EncodedMedia]
    audio: EncodedMedia | None
    package: PackageResult
    stage_seconds: dict[str, float]
    audio_tracks: list[EncodedMedia] = []
    subtitles: list[SubtitleMedia] = []
    quality: QualityResult | None = None
    ladder_analysis: LadderAnalysis | None = Field(None, description="ladder auto's analysis.")
    chunking: ChunkDecision | None = Field(None, description="None: jobs from before it.")


class Manifests(Strict):
    hls: str
    dash: str
    manifest: str


class CleanupInput(Strict):
    job_id: str
    output_uri: str
    scratch_uri: str
    remove_outputs: bool


class ErrorInfo(BaseModel):
    type: str
    message: str


class NotifyInput(Strict):
    job_id: str
    status: str
    webhook_url: str | None
    error: ErrorInfo | None = None
    manifests: Manifests | None = None


# ---------------------------------------------------------------- webhooks

WebhookEventType = Literal[
    "job.accepted",
    "job.started",
    "job.stage",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
]
FINAL_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")


class WebhookEvent(Strict):
    """The body POSTed to a job's webhook; ``id`` is the same on every attempt, so a receiver
    drops duplicates by it."""

    id: str
    type: WebhookEventType
    job_id: str
    created_at: datetime
    data: dict[str, Any] = {}


class WebhookTarget(Strict):
    url: str
    secret: str | None = Field(None, description="None: the worker's COSMOS_WEBHOOK_SECRET.")
    retry_hours: float = Field(24.0, gt=0, le=720)


class WebhookRun(Strict):
    """Input of the WebhookWorkflow that delivers one job run's events."""

    target: WebhookTarget
    first: WebhookEvent


class WebhookCall(Strict):
    """One delivery: the activity's input."""

    target: WebhookTarget
    event: WebhookEvent


class WebhookAnswer(Strict):
    status_code: int
    attempt: int


class WebhookDelivery(BaseModel):
    """One event's delivery, as the job status lists it."""

    event_id: str
    type: WebhookEventType
    state: Literal["queued", "delivering", "delivered", "failed"] = "queued"
    attempts: int = Field(
        0,
        description="Attempts made so far (the one in flight included; one the retry "
        "deadline cut short of its answer is not counted).",
    )
    last_status: int | None = Field(None, description="HTTP status of the last answer.")
    last_error: str | None = None
    delivered_at: datetime | None = None


# ---------------------------------------------------------------- pipeline functions
# The inputs and outputs of the built-in functions a Plato rule names as steps
# (app/stratum/builtins.py). The pipeline runtime fills job_id, scratch_uri, output_uri and
# webhook_url from the run itself (app/stratum/catalog.py).

SourceRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="Path, file:// or s3:// URI; checked as POST /v1/encode checks a source "
        "(under the allowed roots, or in an allowed bucket).",
    ),
]


class ProbeSourceInput(Strict):
    job_id: str
    source: SourceRef


class EncodeSegmentInput(Strict):
    job_id: str
    scratch_uri: str
    source: SourceRef
    probe: ProbeResult
    profile: ProfileName | CustomProfile = Field(
        description="A preset name (720p, 480p, ...) or an inline rung."
    )
    codec: Codec = "h264"
    segment_seconds: int = Field(4, ge=1, le=10, description="HLS/DASH segment (and GOP) length.")
    chunk_seconds: float = Field(
        DEFAULT_CHUNK_SECONDS,
        ge=0,
        le=600,
        description="Chunk length for encoding in parallel over the pools, as POST /v1/encode "
        "does; 0: whole, in one activity.",
    )
    min_chunk_seconds: float = Field(DEFAULT_MIN_CHUNK_SECONDS, ge=0.5, le=600)


class SegmentPlan(Strict):
    """``encode-segment``'s profile fitted to the source: the rendition, or why it is dropped;
    and the job its encode runs under (retries, heartbeat, chunking from the worker's settings)."""

    job: EncodeJob
    rendition: Rendition | None = None
    dropped: DroppedProfile | None = None


class EncodeSegmentOutput(Strict):
    """One rendition, encoded into scratch; or the profile dropped (it would upscale)."""

    rendition: Rendition | None = Field(description="None: the profile was dropped.")
    media: EncodedMedia | None = Field(description="None: the profile was dropped.")
    dropped: DroppedProfile | None = None


class MuxFinalInput(Strict):
    job_id: str
    scratch_uri: str
    source: SourceRef
    probe: ProbeResult
    videos: list[EncodeSegmentOutput] = Field(
        min_length=1, max_length=64, description="encode-segment's outputs (dropped ones too)."
    )
    segment_seconds: int = Field(4, ge=1, le=10, description="As the videos were encoded.")
    audio: list[EncodedMedia] | None = Field(
        None,
        max_length=32,
        description="Audio already encoded, packaged as it is; default: every source audio "
        "track encoded here (AAC stereo), as POST /v1/encode does.",
    )
    thumbnails: ThumbnailOptions | None = Field(
        None, description="Trick-play thumbnails and a poster; default: none."
    )


class MuxFinalOutput(PackageResult):
    """The package in staging, and what publish-manifest reports of its tracks."""

    segment_seconds: int
    audio_tracks: list[AudioRendition] = []
    audio_media: list[EncodedMedia] = Field(default_factory=list, description="Plan order.")
    subtitle_tracks: list[SubtitleRendition] = []
    subtitle_media: list[SubtitleMedia] = []
    not_carried: list[NotCarried] = []


class PublishManifestInput(Strict):
    job_id: str
    output_uri: str
    source: SourceRef
    probe: ProbeResult
    videos: list[EncodeSegmentOutput] = Field(min_length=1, max_length=64)
    package: MuxFinalOutput
    stage_seconds: dict[str, float] = {}


class NotifyOncallInput(Strict):
    job_id: str
    error: ErrorInfo | None = None
    webhook_url: str | None = None
    step: str | None = Field(None, description="The step that failed, where known.")


class NotifyOncallOutput(Strict):
    notified: bool = Field(description="The job's webhook was called (false: none, logged only).")


# ---------------------------------------------------------------- quality (VMAF, PSNR, SSIM)

QualityMetric = Literal["vmaf", "psnr", "ssim"]
QualityAlign = Literal["strict", "auto"]
QualityAt = Literal["reference", "rendition", "display"]
"""The size a comparison is made at: the reference's (any pair), the rendition's (the source
scaled down to it) or the top rung's display size (both scaled to it, for VMAF)."""
ALL_METRICS: tuple[QualityMetric, ...] = ("vmaf", "psnr", "ssim")
DEFAULT_QUALITY_CHUNK_SECONDS = 10.0


def _unique_metrics(value: list[QualityMetric]) -> list[QualityMetric]:
    if len(set(value)) != len(value):
        raise ValueError("each metric at most once")
    return value


class QualityOptions(Strict):
    """``quality`` of ``POST /v1/encode``: measured per rendition after the encode, in chunks
    over the pools; the pass decodes every frame and stands in for the chunks' decode check."""

    metrics: list[QualityMetric] = Field(
        default_factory=lambda: list(ALL_METRICS), min_length=1, max_length=3
    )
    chunk_seconds: float = Field(DEFAULT_QUALITY_CHUNK_SECONDS, ge=1, le=600)

    _metrics = field_validator("metrics")(_unique_metrics)


class QualityRequest(Strict):
    """Body of ``POST /v1/quality``: compare any two files."""

    reference: str = Field(
        min_length=1, max_length=4096, description="The original: path, file:// or s3:// URI."
    )
    distorted: str = Field(
        min_length=1,
        max_length=4096,
        description="The copy measured against it, brought to the reference's size (bicubic).",
    )
    metrics: list[QualityMetric] = Field(
        default_factory=lambda: list(ALL_METRICS), min_length=1, max_length=3
    )
    align: QualityAlign = Field(
        "strict",
        description="strict: a frame-rate or duration mismatch is an error; auto: the distorted "
        "is resampled to the reference's frame rate and the common duration is compared.",
    )
    chunk_seconds: float = Field(
        DEFAULT_QUALITY_CHUNK_SECONDS,
        ge=1,
        le=600,
        description="Length of the pieces computed in parallel (a long title gets longer ones).",
    )

    _metrics = field_validator("metrics")(_unique_metrics)


class QualityRecomputeRequest(Strict):
    """Body of ``POST /v1/jobs/{job_id}/quality`` (optional): every rendition of a finished
    encode job against its source, from the published files."""

    metrics: list[QualityMetric] = Field(
        default_factory=lambda: list(ALL_METRICS), min_length=1, max_length=3
    )
    chunk_seconds: float = Field(DEFAULT_QUALITY_CHUNK_SECONDS, ge=1, le=600)

    _metrics = field_validator("metrics")(_unique_metrics)


class QualityFile(Strict):
    """A file a quality job reads. ``source``: checked as any source is; ``scratch``: a file of
    this job's scratch space; ``hls``: a media playlist of a published package, joined into
    scratch (init segment and fMP4 segments, byte for byte) before anything reads it."""

    uri: str
    kind: Literal["source", "scratch", "hls"] = "source"


class QualityView(Strict):
    """One size a comparison is measured at; ``None`` sizes are the reference's, once probed."""

    at: QualityAt
    width: int | None = Field(None, ge=16, le=8192)
    height: int | None = Field(None, ge=16, le=8192)
    metrics: list[QualityMetric] = Field(min_length=1, max_length=3)


class QualityComparison(Strict):
    """One distorted file (a rendition, or the other file of a pair) against the reference."""

    name: TrackName
    distorted: QualityFile
    views: list[QualityView] = Field(min_length=1, max_length=4)
    frame_rate: str | None = Field(None, description="Known already (a rendition's plan).")
    encoded_with: EncoderSettings | None = Field(
        None,
        description="The rendition's settings: its deinterlacing and tone-mapping are applied "
        "to the reference too, so like is compared with like.",
    )

    @field_validator("views")
    @classmethod
    def _one_view_per_size_kind(cls, value: list[QualityView]) -> list[QualityView]:
        kinds = [v.at for v in value]
        if len(set(kinds)) != len(kinds):
            raise ValueError("each of reference, rendition and display at most once")
        return value


class QualityJob(Strict):
    """The QualityWorkflow's input."""

    job_id: str
    reference: QualityFile
    comparisons: list[QualityComparison] = Field(min_length=1, max_length=64)
    align: QualityAlign = "strict"
    chunk_seconds: float = DEFAULT_QUALITY_CHUNK_SECONDS
    output_uri: str
    scratch_uri: str
    retry: RetryOptions = RetryOptions()
    heartbeat_timeout_s: float = Field(30.0, gt=0, le=3600)
    window: int = Field(DEFAULT_WINDOW, ge=1, le=1000, description="Chunk tasks in flight.")
    of_job: str | None = Field(None, description="The encode job whose renditions are measured.")
    target_uri: str | None = Field(
        None,
        description="Where quality.json and frames/ go; default <output_uri>/<job_id>. An encode "
        "job's quality pass writes into its package's staging, published with it.",
    )
    cleanup: bool = Field(True, description="False inside an encode job: its saga cleans up.")


class QualityPrepareInput(Strict):
    job_id: str
    scratch_uri: str
    name: str = Field(description="Names the scratch copy: reference, or the comparison's name.")
    file: QualityFile
    container: str | None = Field(None, description="The probed demuxer (source files).")


UNTAGGED_COLOUR = (2, 2, 2, 0)
"""A stream's colour tags (matrix, primaries, transfer, range, as FFmpeg numbers them) when it
has none: ``AVCOL_SPC_UNSPECIFIED`` and its siblings."""


class QualityMedia(Strict):
    """A file ready to be measured, and its video timeline as ffmpeg will see it."""

    file: QualityFile = Field(description="A source or a scratch file (never a playlist).")
    container: str
    frames: int = Field(description="Video frames (demuxed packets).")
    duration_s: float = Field(description="From the first frame to the end of the last.")
    first_s: float = Field(description="Presentation time of the first frame.")
    start_s: float = Field(description="The file's start time (what -ss is relative to).")
    frame_rate: str
    width: int = Field(description="As decoded: the display matrix's rotation applied.")
    height: int
    pix_fmt: str | None = None
    colour: tuple[int, int, int, int] = Field(
        UNTAGGED_COLOUR,
        description="Matrix, primaries, transfer and range as FFmpeg numbers them "
        "(2, 2, 2, 0: untagged).",
    )
    variable_frame_rate: bool = False


class QualityPair(Strict):
    """A comparison as the chunk tasks compute it: every size resolved, the alignment decided.
    Frames are counted on the pair's grid: the reference's frame rate, times ``multiplier``
    where the rendition was deinterlaced at field rate."""

    name: str
    distorted: QualityMedia
    views: list[QualityView]
    multiplier: int = Field(1, ge=1, le=2)
    resample_reference: bool = False
    resample_distorted: bool = False
    pix_fmt: str = Field(description="Both sides are converted to it (the distorted's format).")
    encoded_with: EncoderSettings | None = None
    frames: int = Field(description="Frames compared: the common length, on the pair's grid.")
    notes: list[str] = Field(default_factory=list, description="What alignment did.")


class QualityChunk(Strict):
    """Reference frames ``[start_frame, end_frame)`` (``None``: to the end of the shorter file).
    ``offset_frames`` is the title frame the files begin at: 0 for whole files, the chunk's
    first frame where the files are an encode job's chunk files."""

    index: int
    start_frame: int = Field(ge=0)
    end_frame: int | None = None
    offset_frames: int = Field(0, ge=0)
    duration_s: float = Field(description="About how long it lasts (progress only).")


class QualityChunkInput(Strict):
    job_id: str
    scratch_uri: str
    reference: QualityMedia
    pairs: list[QualityPair] = Field(min_length=1)
    chunk: QualityChunk
    context: bool = Field(
        True,
        description="Decode a frame either side of the chunk, so VMAF's motion feature at the "
        "chunk's edges is what a whole-file run computes (false for chunk files).",
    )


class QualityChunkResult(Strict):
    index: int
    uri: str = Field(description="The chunk's per-frame values (JSON) in scratch.")
    frames: dict[str, int] = Field(description="Frames measured, per comparison.")
    reused: bool = Field(False, description="Found whole from an earlier attempt.")


class QualityAssembleInput(Strict):
    job_id: str
    scratch_uri: str
    output_uri: str
    reference: QualityMedia
    pairs: list[QualityPair]
    chunks: int = Field(ge=1, description="Chunk results in scratch, 0 .. chunks-1.")
    of_job: str | None = None
    target_uri: str | None = Field(None, description="Default <output_uri>/<job_id>.")


class WorstChunk(Strict):
    index: int
    start_s: float
    end_s: float
    value: float | None = Field(description="The chunk's pooled value (mean; PSNR from MSE).")


class MetricSummary(Strict):
    """One metric over every frame compared. ``None`` for an infinite PSNR (identical frames)."""

    mean: float | None = Field(description="VMAF, SSIM: mean; PSNR: from the mean MSE.")
    harmonic_mean: float | None = Field(None, description="VMAF only, as libvmaf pools it.")
    p1: float | None = Field(description="1st percentile of the per-frame values.")
    p5: float | None = Field(description="5th percentile.")
    min: float | None
    worst_chunk: WorstChunk | None = None


class PsnrSummary(Strict):
    """As ffmpeg's psnr filter reports: Y, U, V and their plane-size-weighted average."""

    y: MetricSummary
    u: MetricSummary
    v: MetricSummary
    average: MetricSummary


class SsimSummary(Strict):
    """As ffmpeg's ssim filter reports: Y, U, V and All (``all_db``: All's mean in dB)."""

    y: MetricSummary
    u: MetricSummary
    v: MetricSummary
    all: MetricSummary
    all_db: float | None = None


class QualityViewSummary(Strict):
    at: QualityAt
    width: int
    height: int
    vmaf_model: str | None = None
    vmaf: MetricSummary | None = None
    psnr: PsnrSummary | None = None
    ssim: SsimSummary | None = None


class QualityComparisonSummary(Strict):
    name: str
    distorted: str
    frames: int
    frame_rate: str = Field(description="The grid compared on (the reference's rate).")
    duration_s: float
    views: list[QualityViewSummary]
    notes: list[str] = Field(default_factory=list, description="What alignment did.")
    frames_uri: str = Field(description="Per-frame values: JSON in the output location.")


class QualityResult(BaseModel):
    """A quality job's result: ``quality.json`` in the output location, and the job status."""

    job_id: str
    reference: str
    of_job: str | None = None
    comparisons: list[QualityComparisonSummary]
    quality_uri: str
    stage_seconds: dict[str, float] = {}


# ---------------------------------------------------------------- per-title ladders (ladder: auto)


class LadderInput(Strict):
    """The LadderWorkflow's input (and its first activity's): the job, with its ``profiles``
    still the fixed ladder, and the source's probe. The analysis knobs have defaults that a
    job never changes; tests and the bench make it cheaper."""

    job: EncodeJob
    probe: ProbeResult
    samples: int | None = Field(
        None, ge=1, le=10, description="None (with sample_seconds None): sized to the budget."
    )
    sample_seconds: float | None = Field(
        None, ge=0.5, le=10, description="None (with samples None): sized to the budget."
    )
    crfs: list[int] | None = Field(
        None, min_length=2, max_length=8, description="Quality points; None: the codec's."
    )
    preset: str | None = Field(
        None, description="Preset of the analysis encodes; None: the rungs' own (the job's)."
    )


class LadderSample(Strict):
    """A piece of the title, decoded once and kept lossless (H.264) in scratch: every analysis
    encode reads it, and it is their VMAF reference."""

    index: int
    start_s: float = Field(description="Where it starts in the source.")
    duration_s: float
    frames: int
    frame_rate: str = Field(description="The renditions' rate (field-rate deinterlacing: 2x).")
    uri: str = Field(description="The lossless copy in scratch (removed after the analysis).")


class LadderPrepared(Strict):
    """What the analysis measures: resolutions, samples, quality points, the bounds."""

    codec: Codec
    options: LadderOptions = Field(description="Resolved: every bound and the codec set.")
    fixed: list[Rendition] = Field(description="The fixed ladder's plan (the job's profiles).")
    candidates: list[Rendition] = Field(
        description="One per resolution measured: the fixed ladder's sizes that fit, in the "
        "auto ladder's codec and the analysis preset."
    )
    display_width: int
    display_height: int
    vmaf_model: str
    samples: list[LadderSample]
    crfs: list[int]
    cap_kbps: int | None = Field(
        description="maxrate of the analysis encodes (capped CRF): 1.5x max_kbps; None for "
        "SVT-AV1 (no VBV in CRF mode here)."
    )
    keyframes: int = Field(description="Keyframes scanned for scene scores.")
    scene_cuts: int = Field(description="Of which scene cuts.")
    notes: list[str] = []


class LadderMeasureInput(Strict):
    """One sample at one resolution, encoded at every quality point and measured."""

    job_id: str
    scratch_uri: str
    sample: LadderSample
    rendition: Rendition
    crfs: list[int] = Field(min_length=1)
    display_width: int
    display_height: int


class LadderPoint(Strict):
    """One encode of the analysis (``sample`` set), or one quality point pooled over every
    sample (``sample`` None: the bits over the seconds, VMAF over the frames)."""

    width: int
    height: int
    crf: int
    sample: int | None = None
    kbps: float
    vmaf: float = Field(description="Mean over the frames, at the display size.")
    vmaf_harmonic_mean: float
    frames: int
    duration_s: float
    size_bytes: int = Field(description="The video stream's bytes (packets, no container).")
    keyframe_bytes: int = Field(0, description="Of which keyframes'.")
    keyframe_weight: float = Field(
        1.0,
        description="What the keyframes count for in ``kbps``: the sample's share of a GOP "
        "(at most 1), so a sample shorter than the renditions' GOP is not charged a whole "
        "keyframe's bits.",
    )
    on_hull: bool = Field(False, description="A vertex of the upper convex hull of its set.")


class LadderMeasured(Strict):
    sample: int
    width: int
    height: int
    points: list[LadderPoint]


class LadderChooseInput(Strict):
    prepared: LadderPrepared
    measured: list[LadderMeasured]
    notes: list[str] = Field([], description="Why resolutions were left unmeasured, if any.")


class LadderScope(Strict):
    """What the analysis measured after the top resolution (``ladder_scope``; histories from
    before ``ladder_next``)."""

    renditions: list[Rendition] = Field(description="The lower resolutions still to measure.")
    notes: list[str] = []


class LadderTask(Strict):
    """One resolution at some of the quality points, for every sample."""

    rendition: Rendition
    crfs: list[int] = Field(min_length=1)


class LadderNext(Strict):
    """What the analysis measures next (``ladder_next``): nothing once its points suffice."""

    tasks: list[LadderTask] = []
    notes: list[str] = Field([], description="Why points were left unmeasured, if any.")


class LadderRung(Strict):
    """A rung of a ladder and the VMAF the analysis predicts for it (at the display size)."""

    name: str
    width: int
    height: int
    bitrate_kbps: int
    predicted_vmaf: float | None = Field(
        None, description="None: not predicted (another codec than the analysis')."
    )
    extrapolated: bool = Field(False, description="Below every measured bitrate.")


class LadderSampleSpan(Strict):
    index: int
    start_s: float
    duration_s: float
    frames: int


class LadderAnalysis(Strict):
    """What ``ladder: auto`` decided and why: ``manifest.json``'s ``ladder_analysis``."""

    method: str
    codec: Codec
    profiles: list[CustomProfile] = Field(description="The chosen rungs, as the plan takes them.")
    rungs: list[LadderRung] = Field(description="The chosen rungs, bottom first.")
    fixed: list[LadderRung] = Field(description="The fixed ladder it replaced, bottom first.")
    hull: list[LadderPoint] = Field(description="The pooled upper convex hull, by bitrate.")
    points: list[LadderPoint] = Field(description="Every quality point, pooled over samples.")
    sample_points: list[LadderPoint] = Field(description="Every encode of every sample.")
    samples: list[LadderSampleSpan]
    options: LadderOptions = Field(description="The bounds applied (defaults resolved).")
    display_width: int
    display_height: int
    vmaf_model: str
    crfs: list[int]
    preset: str
    keyframes: int
    scene_cuts: int
    notes: list[str] = []


# ---------------------------------------------------------------- job state (query, result, API)


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class RenditionState(BaseModel):
    name: str
    codec: str
    width: int
    height: int
    status: Literal["pending", "encoding", "done", "failed", "cancelled"] = "pending"
    progress: float = 0.0
    fps: float | None = None
    speed: float | None = None
    frames: int | None = None
    size_bytes: int | None = None
    queue: str | None = Field(None, description="The pool it ran on.")
    encoder: str | None = None
    chunks_done: int | None = Field(None, description="Chunked encodes: chunks finished.")
    chunks_total: int | None = None


class WorkflowState(BaseModel):
    """What the workflow knows about itself; served by its ``state`` query."""

    stage: str = "queued"
    renditions: list[RenditionState] = []
    dropped: list[DroppedProfile] = []
    manifests: Manifests | None = None
    stage_seconds: dict[str, float] = {}
    source: ProbeResult | None = Field(None, description="The probe's report of the source.")
    not_carried: list[NotCarried] = []
    chunk_workflows: dict[str, str] = Field(
        default_factory=dict, description="Running chunk-range children: workflow ID -> codec."
    )
    webhook_workflow: str | None = Field(None, description="Delivers this run's events.")
    chunking: ChunkDecision | None = Field(None, description="Chunked or whole, and why.")
    progress: float | None = Field(
        None, description="Where the workflow knows its own (pipeline runs); else the API's rule."
    )


class EncodeResult(BaseModel):
    job_id: str
    manifests: Manifests
    renditions: list[RenditionState]
    dropped: list[DroppedProfile]
    stage_seconds: dict[str, float]
    source: ProbeResult | None = None
    not_carried: list[NotCarried] = []
    webhook_workflow: str | None = None
    quality: QualityResult | None = Field(None, description="Where the job asked for quality.")


class Progress(BaseModel):
    """Heartbeat details of an ffmpeg run."""

    done_s: float
    total_s: float
    fps: float | None = None
    speed: float | None = None
    frames: int | None = None


class InspectRequest(Strict):
    """Body of ``POST /v1/inspect``."""

    source: str = Field(min_length=1, max_length=4096, description="Path, file:// or s3:// URI.")


class InspectInput(Strict):
    """The inspect workflow's input: the source resolved to a URI."""

    source_uri: str
    job_id: str = Field(description="The inspection's workflow ID (scratch folder name).")
    retry: RetryOptions = RetryOptions()


class SubmitResponse(BaseModel):
    job_id: str
    status_url: str
    web_ui_url: str
    deduplicated: bool


class JobView(BaseModel):
    """Body of ``GET /v1/jobs/{job_id}``."""

    job_id: str
    status: JobStatus
    stage: str | None
    progress: float = Field(ge=0, le=1)
    renditions: list[RenditionState]
    dropped: list[DroppedProfile] = []
    source: ProbeResult | None = Field(None, description="Every stream of the source, probed.")
    not_carried: list[NotCarried] = Field(
        default_factory=list, description="Source streams the outputs do not carry, and why."
    )
    manifests: Manifests | None
    error: ErrorInfo | None
    created_at: datetime | None
    updated_at: datetime | None
    web_ui_url: str
    stage_seconds: dict[str, float] = Field(
        default_factory=dict, description="Seconds each finished stage took, by stage name."
    )
    webhooks: list[WebhookDelivery] = Field(
        default_factory=list, description="Each event sent to the job's webhook, in order."
    )
    quality: QualityResult | None = Field(
        None, description="A finished quality job's result (POST /v1/quality)."
    )


class JobSummary(BaseModel):
    job_id: str
    status: JobStatus
    codec: str | None = Field(None, description="From the CosmosCodec search attribute.")
    source: str | None = Field(None, description="From the CosmosSource search attribute.")
    created_at: datetime | None
    closed_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobSummary]


class Poller(BaseModel):
    identity: str
    last_seen: datetime | None


class Pool(BaseModel):
    """Body item of ``GET /v1/workers``."""

    queue: str
    kind: Literal["workflow", "cpu", "nvenc", "cuda", "notify"]
    capabilities: list[str]
    pollers: list[Poller]


class PoolList(BaseModel):
    pools: list[Pool]
