"""Which H.264 packets a sparse frame sampler may leave undecoded.

A picture whose slices all have nal_ref_idc = 0 is never used to predict another picture (H.264 7.4.1), so when
it is not one of the wanted frames the decoder need not see it at all; the wanted frames come out bit-identical.
With x264's defaults (3 B-frames, B-pyramid) about 40-45% of the pictures are such non-reference B-frames, which
is most of the speed-up of stages.video.decode over decoding every frame. Only the NAL header byte is read;
anything that does not parse cleanly is treated as a reference picture (decoded), never the other way round.
"""
from __future__ import annotations

VCL_TYPES = range(1, 6)  # coded slice NAL unit types (non-IDR .. IDR)


def nal_length_size(extradata: bytes | None) -> int | None:
    """Bytes of each NAL length prefix in avcC-framed packets (MP4/MKV), or None for Annex B / unknown."""
    if extradata and len(extradata) >= 7 and extradata[0] == 1:  # avcC configurationVersion
        return (extradata[4] & 0x03) + 1
    return None


def _nal_header_bytes_avcc(data: bytes, length_size: int):
    i, n = 0, len(data)
    while i + length_size <= n:
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if size <= 0 or i + size > n:
            raise ValueError("bad NAL length")
        yield data[i]
        i += size
    if i != n:
        raise ValueError("trailing bytes")


def _nal_header_bytes_annexb(data: bytes):
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        yield data[i + 3]
        i = data.find(b"\x00\x00\x01", i + 3)


def droppable(data: bytes, length_size: int | None) -> bool:
    """True if the packet holds only non-reference coded slices (safe to skip when its frame is not wanted)."""
    try:
        headers = list(_nal_header_bytes_avcc(data, length_size) if length_size else _nal_header_bytes_annexb(data))
    except ValueError:
        return False
    vcl = [b for b in headers if b & 0x1F in VCL_TYPES]
    return bool(vcl) and all((b >> 5) & 0x03 == 0 for b in vcl)
