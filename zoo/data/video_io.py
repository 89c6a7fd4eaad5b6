"""Video decoding with PyAV that decodes only what a sampled clip needs.

    info = probe_video(path)                       # frames, fps, size, keyframes; cached per (path, size, mtime)
    clip = read_frames(path, [3, 40, 41, 700])     # uint8 (4, H, W, 3) in the order asked (repeats allowed)
    clip = read_frames(path, indices, short_side=64)  # scaled by libswscale while converting, before numpy

How frames are found: `probe_video` demuxes the packets of the video stream (no decoding, about 1 ms per 100
frames) and keeps their presentation timestamps in display order and which of them are keyframes. Frame i is the
i-th timestamp. The frame count is that packet count, not the container's header (tree.avi's header claims 444
frames for 68 real ones; a truncated AVI keeps its original count). When the packets carry no timestamps the
count comes from decoding the whole stream once, and such files are read by decoding forward from the start.

`read_frames` seeks to the keyframe at or before the first wanted frame, decodes forward, converts only the wanted
frames to RGB, and seeks again whenever a later keyframe lies between the decoder's position and the next wanted
frame; so a clip of 8 frames spread over a video costs the frames from each keyframe to the wanted frame after it,
not the whole video, and never an RGB conversion of a frame that is not kept.

Any failure to open, demux or decode a file (missing, truncated, random bytes, a wanted frame that never comes
out of the decoder) raises `VideoDecodeError`, which the video sources turn into "skip this file and count it".
A stream whose packets cover less than 90% of the duration its header declares (its duration, or its frame count
over its frame rate) is reported as truncated.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

# A stream whose packets cover less than this fraction of its declared duration is a truncated file.
TRUNCATION_FRACTION = 0.9


class VideoDecodeError(RuntimeError):
    """A video file that cannot be read: missing, truncated, corrupt, or without a decodable video stream."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {reason}")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Per-file metadata from demuxing (no decoding unless the packets carry no timestamps).

    Attributes:
      path: the file.
      num_frames: decodable frames (packets with data), the count every sampler should use.
      declared_frames: what the container header says (0 when unknown); may disagree with num_frames.
      fps: average frame rate from the stream (0.0 when unknown).
      width, height: coded frame size.
      pts: (num_frames,) int64 presentation timestamps in display order; empty when `seekable` is False.
      keyframes: sorted frame indices of keyframes (seek targets).
      seekable: False when frames must be decoded from the start (no timestamps).
    """

    path: str
    num_frames: int
    declared_frames: int
    fps: float
    width: int
    height: int
    pts: np.ndarray
    keyframes: np.ndarray
    seekable: bool

    @property
    def duration_s(self) -> float:
        """Seconds of video at `fps` (0.0 when the rate is unknown)."""
        return self.num_frames / self.fps if self.fps else 0.0


def _import_av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("decoding video needs PyAV: pip install av") from err
    return av


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    path = str(path)
    try:
        stat = os.stat(path)
    except OSError as err:
        raise VideoDecodeError(path, f"file not found or unreadable ({err.strerror})") from err
    return path, stat.st_size, stat.st_mtime_ns


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Metadata of a video file (cached per process by path, size and modification time)."""
    return _probe_cached(*_file_key(path))


@functools.lru_cache(maxsize=65536)
def _probe_cached(path: str, size: int, mtime_ns: int) -> VideoInfo:
    del size, mtime_ns  # part of the cache key only: a rewritten file is probed again
    av = _import_av()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            time_base = float(stream.time_base) if stream.time_base else 0.0
            declared_duration = float(stream.duration) * time_base if stream.duration and time_base else 0.0
            if declared and fps:
                # FFmpeg recomputes a truncated AVI's duration from its index; the header's frame count keeps the truth.
                declared_duration = max(declared_duration, declared / fps)
            pts, keyframe_pts, missing_pts = [], [], False
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end, or an empty (dropped) frame
                    continue
                if packet.pts is None:
                    missing_pts = True
                    break
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keyframe_pts.append(int(packet.pts))
        if missing_pts:
            return _probe_by_decoding(path, declared, fps, width, height)
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
        raise VideoDecodeError(path, f"{type(err).__name__}: {err}") from err
    if not pts:
        raise VideoDecodeError(path, "the video stream has no frames")
    pts_sorted = np.sort(np.asarray(pts, np.int64))
    if declared_duration > 0 and (len(pts_sorted) > 1 or fps):
        if len(pts_sorted) > 1:
            step = float(np.median(np.diff(pts_sorted)))
            covered = (float(pts_sorted[-1] - pts_sorted[0]) + step) * time_base
        else:
            covered = 1.0 / fps
        if covered < TRUNCATION_FRACTION * declared_duration:
            raise VideoDecodeError(
                path, f"truncated: frames cover {covered:.2f} s of the {declared_duration:.2f} s the header declares"
            )
    keyframes = np.searchsorted(pts_sorted, np.asarray(sorted(set(keyframe_pts)), np.int64))
    if len(keyframes) == 0 or keyframes[0] != 0:
        keyframes = np.concatenate([[0], keyframes])  # decoding from the start always works
    return VideoInfo(path, len(pts_sorted), declared, fps, width, height, pts_sorted, keyframes.astype(np.int64), True)


def _probe_by_decoding(path: str, declared: int, fps: float, width: int, height: int) -> VideoInfo:
    av = _import_av()
    with av.open(path) as container:
        count = sum(1 for _ in container.decode(video=0))
    if count == 0:
        raise VideoDecodeError(path, "no frame decodes")
    empty = np.zeros((0,), np.int64)
    return VideoInfo(path, count, declared, fps, width, height, empty, np.zeros((1,), np.int64), False)


def _output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    # mmcv.rescale_size rounding (int(x * scale + 0.5)), as the official video pipelines resize.
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray,
    *,
    short_side: int | None = None,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Frames `indices` of a video as uint8 RGB (len(indices), H, W, 3), decoding only what they need.

    Args:
      path: the video file.
      indices: frame numbers in [0, num_frames) in any order, repeats allowed.
      short_side: scale every frame so its short side has this length (bilinear, during RGB conversion).
      info: `probe_video(path)` if the caller already has it.

    Raises:
      VideoDecodeError: the file is missing or broken, or a wanted frame does not decode.
      IndexError: an index is outside [0, num_frames).
    """
    info = probe_video(path) if info is None else info
    wanted_all = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted_all.size == 0:
        raise ValueError("no frame indices given")
    if wanted_all.min() < 0 or wanted_all.max() >= info.num_frames:
        raise IndexError(f"frame indices {wanted_all.tolist()} outside [0, {info.num_frames}) for {info.path!r}")
    wanted = np.unique(wanted_all)
    out_width, out_height = _output_size(info.width, info.height, short_side)
    av = _import_av()
    decoded: dict[int, np.ndarray] = {}
    try:
        with av.open(info.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if info.seekable:
                _decode_seeking(container, stream, info, wanted, decoded, out_width, out_height)
            else:
                _decode_forward(container, info, wanted, decoded, out_width, out_height)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(info.path, f"{type(err).__name__}: {err}") from err
    missing = [int(index) for index in wanted if int(index) not in decoded]
    if missing:
        raise VideoDecodeError(info.path, f"frames {missing[:8]} did not decode (the file is probably truncated)")
    return np.stack([decoded[int(index)] for index in wanted_all])


def _to_rgb(frame, width: int, height: int) -> np.ndarray:
    if frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR")
        return frame.to_ndarray()
    return frame.to_ndarray(format="rgb24")


def _decode_seeking(container, stream, info: VideoInfo, wanted: np.ndarray, decoded: dict, width: int, height: int):
    """Seek to the keyframe before each run of wanted frames and decode forward to the run's end."""
    pts_to_index = {int(value): index for index, value in enumerate(info.pts)}
    wanted_lookup = {int(index) for index in wanted}
    position = None  # index of the last frame the current decode loop produced
    frames = None
    cursor = 0
    while cursor < len(wanted):
        target = int(wanted[cursor])
        keyframe = int(info.keyframes[np.searchsorted(info.keyframes, target, side="right") - 1])
        if frames is None or position is None or position >= target or keyframe > position:
            # Seeking skips the frames before `keyframe`; without a keyframe in between, decoding on is cheaper.
            container.seek(int(info.pts[keyframe]), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            position = None
        for frame in frames:
            index = pts_to_index.get(frame.pts) if frame.pts is not None else None
            if index is None:  # a frame without a known timestamp: count on from the previous one
                index = keyframe if position is None else position + 1
            position = index
            if index in wanted_lookup and index not in decoded:
                decoded[index] = _to_rgb(frame, width, height)
            if index >= target:
                break
        else:
            break  # the stream ended before the target: reported as missing frames
        while cursor < len(wanted) and int(wanted[cursor]) <= position:
            cursor += 1


def _decode_forward(container, info: VideoInfo, wanted: np.ndarray, decoded: dict, width: int, height: int):
    last = int(wanted[-1])
    wanted_lookup = {int(index) for index in wanted}
    for index, frame in enumerate(container.decode(video=0)):
        if index in wanted_lookup:
            decoded[index] = _to_rgb(frame, width, height)
        if index >= last:
            break


def iter_frames(path: str | os.PathLike, *, short_side: int | None = None) -> Iterator[np.ndarray]:
    """Every frame of a video in order as uint8 RGB (H, W, 3), decoded one at a time (a stream: memory stays flat
    over any video length). A missing or broken file, or one where no frame decodes, raises `VideoDecodeError`."""
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            width, height = _output_size(stream.codec_context.width, stream.codec_context.height, short_side)
            for frame in container.decode(stream):
                count += 1
                yield _to_rgb(frame, width, height)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(path, f"{type(err).__name__}: {err}") from err
    if not count:
        raise VideoDecodeError(path, "no frame decodes")


def decode_all_frames(path: str | os.PathLike, *, short_side: int | None = None) -> np.ndarray:
    """Every frame of a video as uint8 RGB (N, H, W, 3) (the reference that sampled decoding is checked against)."""
    return np.stack(list(iter_frames(path, short_side=short_side)))
