"""Fragmented MP4 (CMAF / DASH / HLS fMP4) at the box level: recognise init and media segments,
read what a rewritten segment must keep (track ids, base decode times, sequence number), and
write a new ``moof`` + ``mdat`` for samples we produced.

FFmpeg's own mp4 muxer cannot write a lone media segment that fits somebody else's init
segment (it always invents its own moov, timescales and decode times), so the few boxes a
fragment needs are written here, by ISO/IEC 14496-12 §8.8.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from moodgate.media.errors import MediaError

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts"}


@dataclass(frozen=True)
class Box:
    kind: bytes
    start: int  # offset of the box header in the buffer
    header: int  # header length (8 or 16)
    size: int  # whole box, header included

    @property
    def body(self) -> slice:
        return slice(self.start + self.header, self.start + self.size)


def boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """Top-level boxes between start and end; stops (without raising) at a truncated box."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > end:
                return
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return
        yield Box(bytes(kind), offset, header, size)
        offset += size


def find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> list[Box]:
    """Every box at `path` (e.g. [b"moov", b"trak", b"tkhd"]), descending through containers."""
    found: list[Box] = []
    for box in boxes(data, start, end):
        if box.kind != path[0]:
            continue
        if len(path) == 1:
            found.append(box)
        elif box.kind in _CONTAINERS:
            found += find(data, path[1:], box.start + box.header, box.start + box.size)
    return found


def top_level(data: bytes) -> list[bytes]:
    return [box.kind for box in boxes(data)]


def is_init_segment(data: bytes) -> bool:
    """ftyp + moov and no movie fragment: what EXT-X-MAP / DASH Initialization point at."""
    kinds = top_level(data)
    return b"moov" in kinds and b"moof" not in kinds and b"mdat" not in kinds


def is_media_segment(data: bytes) -> bool:
    """A movie fragment without its own moov: undecodable without the stream's init segment."""
    kinds = top_level(data)
    return b"moof" in kinds and b"moov" not in kinds


def init_is_fragmented(data: bytes) -> bool:
    return bool(find(data, [b"moov", b"mvex"]))


def track_ids(init: bytes) -> list[int]:
    """Track ids in trak order (the order FFmpeg numbers streams in)."""
    ids = []
    for tkhd in find(init, [b"moov", b"trak", b"tkhd"]):
        version = init[tkhd.body.start]
        ids.append(struct.unpack_from(">I", init, tkhd.body.start + (20 if version else 12))[0])
    return ids


def nal_length_size(init: bytes) -> int:
    """Bytes per NAL length prefix in the avcC / hvcC record (4 almost everywhere)."""
    at = init.find(b"avcC")
    if at >= 0 and at + 8 < len(init):
        return (init[at + 8] & 0x03) + 1
    at = init.find(b"hvcC")
    if at >= 0 and at + 25 < len(init):
        return (init[at + 25] & 0x03) + 1
    return 4


def sequence_number(segment: bytes) -> int:
    mfhd = find(segment, [b"moof", b"mfhd"])
    return struct.unpack_from(">I", segment, mfhd[0].body.start + 4)[0] if mfhd else 1


def base_decode_times(segment: bytes) -> dict[int, int]:
    """track id → tfdt baseMediaDecodeTime of its first fragment in this segment."""
    times: dict[int, int] = {}
    for moof in find(segment, [b"moof"]):
        for traf in find(segment, [b"traf"], moof.body.start, moof.body.stop):
            inner = (traf.body.start, traf.body.stop)
            tfhd = find(segment, [b"tfhd"], *inner)
            tfdt = find(segment, [b"tfdt"], *inner)
            if not tfhd or not tfdt:
                continue
            track = struct.unpack_from(">I", segment, tfhd[0].body.start + 4)[0]
            version = segment[tfdt[0].body.start]
            fmt = ">Q" if version else ">I"
            times.setdefault(track, struct.unpack_from(fmt, segment, tfdt[0].body.start + 4)[0])
    return times


def leading_styp(segment: bytes) -> bytes:
    first = next(boxes(segment), None)
    if first is None or first.kind != b"styp":
        return b""
    return segment[first.start : first.start + first.size]


def annexb_to_length_prefixed(data: bytes, length_size: int = 4) -> bytes:
    """H.264/H.265 Annex B (start codes) → the length-prefixed NAL units MP4 samples hold."""
    out = bytearray()
    for nal in _split_annexb(data):
        out += len(nal).to_bytes(length_size, "big") + nal
    return bytes(out)


def _split_annexb(data: bytes) -> Iterator[bytes]:
    starts: list[tuple[int, int]] = []  # (start code offset, payload offset)
    i = 0
    while True:
        i = data.find(b"\x00\x00\x01", i)
        if i < 0:
            break
        begin = i - 1 if i > 0 and data[i - 1] == 0 else i
        starts.append((begin, i + 3))
        i += 3
    for index, (_, payload) in enumerate(starts):
        stop = starts[index + 1][0] if index + 1 < len(starts) else len(data)
        nal = data[payload:stop].rstrip(b"\x00") if index + 1 < len(starts) else data[payload:stop]
        if nal:
            yield nal


@dataclass
class Sample:
    data: bytes
    duration: int  # in the track's timescale
    key: bool
    composition_offset: int = 0  # pts − dts


@dataclass
class TrackRun:
    track_id: int
    base_decode_time: int
    samples: list[Sample] = field(default_factory=list)


_SYNC = 0x02000000  # sample_depends_on = 2 (does not depend on others)
_NON_SYNC = 0x01010000  # depends on others, sample_is_non_sync_sample


def write_fragment(sequence: int, runs: list[TrackRun], styp: bytes = b"") -> bytes:
    """styp (if given) + one moof with a traf per track + one mdat holding every sample."""
    trafs: list[bytes] = []
    offsets: list[int] = []  # where each trun's data_offset field sits inside its traf
    for run in runs:
        tfhd = _full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))
        tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_decode_time))
        flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
        entries = b"".join(
            struct.pack(">IIIi", s.duration, len(s.data), _SYNC if s.key else _NON_SYNC,
                        s.composition_offset)
            for s in run.samples
        )
        trun = _full_box(b"trun", 1, flags, struct.pack(">Ii", len(run.samples), 0) + entries)
        traf_body = tfhd + tfdt + trun
        offsets.append(8 + len(tfhd) + len(tfdt) + 16)
        trafs.append(_box(b"traf", traf_body))
    mfhd = _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    moof_size = 8 + len(mfhd) + sum(len(t) for t in trafs)
    data_start = moof_size + 8  # the first sample follows the mdat header
    patched: list[bytes] = []
    for run, traf, offset in zip(runs, trafs, offsets, strict=True):
        buffer = bytearray(traf)
        struct.pack_into(">i", buffer, offset, data_start)
        data_start += sum(len(s.data) for s in run.samples)
        patched.append(bytes(buffer))
    moof = _box(b"moof", mfhd + b"".join(patched))
    mdat = _box(b"mdat", b"".join(s.data for run in runs for s in run.samples))
    return styp + moof + mdat


def _box(kind: bytes, body: bytes) -> bytes:
    if len(body) + 8 > 0xFFFFFFFF:
        raise MediaError("too-large", "fragment larger than 4 GiB")
    return struct.pack(">I4s", len(body) + 8, kind) + body


def _full_box(kind: bytes, version: int, flags: int, body: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + body)
