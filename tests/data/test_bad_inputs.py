"""Every distinct kind of bad input, each fed among good items: the stage names the item and the reason in its
quarantine file, and every good item still comes through (docs/data.md lists the cases).

Three families, one parametrised test each: videos and frame folders rejected by ingest (local folders, and an
S3 object that vanishes between listing and download, on a real S3 server), videos that ingest accepts but
extract_frames cannot sample, and annotations rejected by build_samples.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from stages import ingest as ingest_stage
from stages.build_samples import build
from stages.datasets.synthetic import encode_mp4, synthesize
from stages.extract_frames import extract_frames
from stages.ingest import ingest
from stages.io import read_jsonl
from stages.params import BuildSamplesParams, ExtractFramesParams, IngestParams, SynthesizeParams

SMALL = dict(num_videos=3, num_tracking_sequences=2, min_duration=2.0, max_duration=3.0, tracking_length=10)
TINY = dict(max_frames=8, min_pixels=3136, max_pixels=112 * 84)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The good items: a small synthetic set, ingested and extracted once (its cache is shared by the cases)."""
    root = tmp_path_factory.mktemp("good")
    synthesize(SynthesizeParams(out_dir=str(root / "syn"), **SMALL))
    cache = root / "cache"
    ingest(IngestParams(source=str(root / "syn" / "videos"), frame_folders=str(root / "syn" / "got10k"),
                        out_dir=str(root / "raw"), cache_dir=str(cache), progress=False))
    extract_frames(ExtractFramesParams(raw_dir=str(root / "raw"), out_dir=str(root / "frames"), cache_dir=str(cache),
                                       progress=False, **TINY))
    return root


def only_record(path: Path) -> dict:
    rows = read_jsonl(path)
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------- ingest: videos and frame folders


def tiny_frames(n=16, h=64, w=96):
    return [np.full((h, w, 3), 5 * i % 256, np.uint8) for i in range(n)]


def case_zero_byte(d: Path):
    (d / "videos" / "empty.mp4").write_bytes(b"")
    return "empty", r"^zero-byte file$"


def case_not_a_video(d: Path):
    (d / "videos" / "notes.mp4").write_text("meeting notes, saved with the wrong name\n")
    return "notes", r"^not a decodable video: InvalidDataError"


def case_truncated_with_index_first(d: Path):
    """A download cut short whose index (moov, written first) promises more frames than the file holds."""
    path = d / "videos" / "cut.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        st = out.add_stream("libx264", rate=8)
        st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
        for f in tiny_frames(48):
            out.mux(st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(st.encode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return "cut", r"^not a decodable video: truncated: the header declares 48 frames, the file holds \d+$"


def case_truncated_index_lost(d: Path):
    """A download cut short before its index (moov at the end, as most encoders write it)."""
    src = next((d / "videos").glob("syn*.mp4"))
    (d / "videos" / "partial.mp4").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return "partial", r"^not a decodable video: .*(moov atom not found|Invalid data)"


def case_unknown_codec(d: Path):
    """An H.264 mp4 whose sample entry names a codec FFmpeg has no decoder for."""
    src = next((d / "videos").glob("syn*.mp4")).read_bytes()
    (d / "videos" / "exotic.mp4").write_bytes(src.replace(b"avc1", b"zzz1"))
    return "exotic", r"^not a decodable video: no decoder for the video stream's codec"


def case_audio_only(d: Path):
    with av.open(str(d / "videos" / "podcast.mp4"), "w") as out:
        st = out.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return "podcast", r"^not a decodable video: no video stream$"


def case_duplicate_id(d: Path):
    (d / "videos" / "z_copy").mkdir()
    shutil.copy(d / "videos" / "syn00001.mp4", d / "videos" / "z_copy" / "syn00001.mp4")
    return "syn00001", r"^duplicate id: first listed at .*videos/syn00001\.mp4$"


def _seq(d: Path, name: str) -> Path:
    seq = d / "got10k" / name
    shutil.copytree(next((d / "got10k").iterdir()), seq)
    return seq


def case_empty_frame_folder(d: Path):
    (d / "got10k" / "GOT-10k_Empty").mkdir()
    return "GOT-10k_Empty", r"^frame folder has no JPEG frames$"


def case_zero_byte_frame(d: Path):
    seq = _seq(d, "GOT-10k_ZeroFrame")
    (seq / "00000004.jpg").write_bytes(b"")
    return "GOT-10k_ZeroFrame", r"^frame folder has zero-byte frames: 00000004\.jpg$"


def case_frame_not_jpeg(d: Path):
    seq = _seq(d, "GOT-10k_Png")
    Image.new("RGB", (224, 168)).save(seq / "00000003.jpg", format="PNG")
    return "GOT-10k_Png", r"^unreadable frames: frame 00000003\.jpg is not a JPEG \(PNG\)$"


def case_frame_garbage(d: Path):
    seq = _seq(d, "GOT-10k_Garbage")
    (seq / "00000005.jpg").write_bytes(b"\x00\x01 not an image at all" * 10)
    return "GOT-10k_Garbage", r"^unreadable frames: frame 00000005\.jpg: UnidentifiedImageError"


def case_frame_sizes_differ(d: Path):
    seq = _seq(d, "GOT-10k_Sizes")
    Image.new("RGB", (320, 240)).save(seq / "00000002.jpg", format="JPEG")
    return "GOT-10k_Sizes", r"^unreadable frames: frames differ in size: 00000001\.jpg is 224x168, 00000002\.jpg is 320x240$"


def case_truncated_last_frame(d: Path):
    seq = _seq(d, "GOT-10k_CutFrame")
    last = sorted(seq.glob("*.jpg"))[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return "GOT-10k_CutFrame", r"^unreadable frames: frame 00000010\.jpg: OSError: image file is truncated"


def _outside(d: Path) -> Path:
    """A folder next to the source root, not below it."""
    out = d.parent / "elsewhere"
    out.mkdir(exist_ok=True)
    return out


def case_symlink_video_outside_root(d: Path):
    """A video below the source that is a symlink to a file outside it (a decodable video, so only the link is
    the problem)."""
    target = _outside(d) / "private.mp4"
    encode_mp4(target, tiny_frames(8), 8.0, 96, 64)
    (d / "videos" / "leak.mp4").symlink_to(target)
    return "leak", r"^symlink points outside the source root: .*/videos/leak\.mp4 -> .*/elsewhere/private\.mp4$"


def case_symlink_frame_outside_root(d: Path):
    """A frame folder one of whose frames is a symlink to an image outside the source."""
    seq = _seq(d, "GOT-10k_Leak")
    target = _outside(d) / "secret.jpg"
    shutil.copy(seq / "00000003.jpg", target)
    (seq / "00000003.jpg").unlink()
    (seq / "00000003.jpg").symlink_to(target)
    return "GOT-10k_Leak", r"^symlink points outside the source root: .*/GOT-10k_Leak/00000003\.jpg -> .*/secret\.jpg$"


def case_symlink_folder_outside_root(d: Path):
    """A frame folder that is itself a symlink to a folder outside the source."""
    target = _outside(d) / "seq"
    shutil.copytree(next((d / "got10k").iterdir()), target)
    (d / "got10k" / "GOT-10k_LinkedDir").symlink_to(target)
    return "GOT-10k_LinkedDir", r"^symlink points outside the source root: .*/got10k/GOT-10k_LinkedDir -> .*/elsewhere/seq$"


INGEST_CASES = [case_zero_byte, case_not_a_video, case_truncated_with_index_first, case_truncated_index_lost,
                case_unknown_codec, case_audio_only, case_duplicate_id, case_empty_frame_folder, case_zero_byte_frame,
                case_frame_not_jpeg, case_frame_garbage, case_frame_sizes_differ, case_truncated_last_frame,
                case_symlink_video_outside_root, case_symlink_frame_outside_root, case_symlink_folder_outside_root]


@pytest.mark.parametrize("case", INGEST_CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_ingest_quarantines_bad_item_and_keeps_good_ones(good, tmp_path, case):
    src = tmp_path / "src"
    shutil.copytree(good / "syn" / "videos", src / "videos")
    shutil.copytree(good / "syn" / "got10k", src / "got10k")
    bad_id, reason = case(src)
    counts = ingest(IngestParams(source=str(src / "videos"), frame_folders=str(src / "got10k"),
                                 out_dir=str(tmp_path / "raw"), cache_dir=str(good / "cache"), progress=False))
    record = only_record(tmp_path / "raw" / "quarantine.jsonl")
    assert record["id"] == bad_id and record["stage"] == "ingest" and record["source"].startswith(str(src))
    assert re.search(reason, record["reason"]), record["reason"]
    manifest = {r["id"]: r for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl")}
    good_ids = {r["id"] for r in read_jsonl(good / "raw" / "manifest.jsonl")}
    assert set(manifest) == good_ids and all(Path(r["path"]).exists() for r in manifest.values())
    assert counts["seen"] == len(good_ids) + 1 == counts["ingested"] + counts["quarantined"]


def test_symlink_outside_root_is_never_read(good, tmp_path):
    """The quarantined link's target never reaches the cache or the out folder; a link within the root is fine."""
    src = tmp_path / "src"
    shutil.copytree(good / "syn" / "videos", src / "videos")
    case_symlink_video_outside_root(src)
    (src / "videos" / "alias.mp4").symlink_to(src / "videos" / "syn00001.mp4")  # stays inside the root
    cache = tmp_path / "cache"
    counts = ingest(IngestParams(source=str(src / "videos"), frame_folders=None, out_dir=str(tmp_path / "raw"),
                                 cache_dir=str(cache), progress=False))
    assert (counts["seen"], counts["ingested"], counts["quarantined"]) == (5, 4, 1)
    assert only_record(tmp_path / "raw" / "quarantine.jsonl")["id"] == "leak"
    secret = (tmp_path / "elsewhere" / "private.mp4").read_bytes()
    held = [p for p in cache.rglob("*") if p.is_file()] + [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    assert held and not any(p.read_bytes() == secret for p in held)
    assert counts["files_fetched"] == 4  # the three good videos and the alias; nothing of the link's target


def test_s3_dot_segments_quarantined_rest_goes_on(good, tmp_path, bucket, s3_endpoint):
    """S3 keys are plain strings: `<prefix>/../x.jpg` made a frame folder named '..' (FileExistsError for the whole
    run when its folder was made under data/raw). Each item with a '.' or '..' segment is quarantined, alone."""
    name, client = bucket
    for p in sorted((good / "syn" / "videos").iterdir()):
        client.put_object(Bucket=name, Key=f"videos/{p.name}", Body=p.read_bytes())
    for seq in sorted((good / "syn" / "got10k").iterdir()):
        for p in sorted(seq.iterdir()):
            client.put_object(Bucket=name, Key=f"got10k/{seq.name}/{p.name}", Body=p.read_bytes())
    frame = next((good / "syn" / "got10k").glob("*/00000001.jpg")).read_bytes()
    video = (good / "syn" / "videos" / "syn00002.mp4").read_bytes()
    bad = {"got10k/../x.jpg": "..", "got10k/./y.jpg": ".", "videos/../escape.mp4": "escape",
           "videos/sub/./dotted.mp4": "dotted"}
    for key in bad:
        client.put_object(Bucket=name, Key=key, Body=frame if key.endswith(".jpg") else video)
    counts = ingest(IngestParams(source=f"s3://{name}/videos", frame_folders=f"s3://{name}/got10k",
                                 out_dir=str(tmp_path / "raw"), cache_dir=str(tmp_path / "cache"),
                                 s3_endpoint_url=s3_endpoint, progress=False))
    records = {r["id"]: r for r in read_jsonl(tmp_path / "raw" / "quarantine.jsonl")}
    assert set(records) == set(bad.values())
    for key, item_id in bad.items():
        seg = ".." if "/../" in key else "."
        assert records[item_id]["reason"] == f"key has a '{seg}' path segment: s3://{name}/{key}", records[item_id]
    good_ids = {r["id"] for r in read_jsonl(good / "raw" / "manifest.jsonl")}
    assert {r["id"] for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl")} == good_ids
    assert counts["seen"] == len(good_ids) + 4 == counts["ingested"] + counts["quarantined"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "frames_src", "manifest.jsonl", "quarantine.jsonl", "summary.json", "videos"]


def test_s3_object_vanishing_after_listing(good, tmp_path, bucket, s3_endpoint, monkeypatch):
    """An object deleted between listing and download (a real race on a shared bucket) costs only that item."""
    name, client = bucket
    for p in sorted((good / "syn" / "videos").iterdir()):
        client.put_object(Bucket=name, Key=f"videos/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket=name, Key="videos/gone.mp4", Body=(good / "syn" / "videos" / "syn00001.mp4").read_bytes())
    listed = ingest_stage.sources

    def list_then_delete(p):
        pairs = listed(p)
        client.delete_object(Bucket=name, Key="videos/gone.mp4")
        return pairs

    monkeypatch.setattr(ingest_stage, "sources", list_then_delete)
    counts = ingest(IngestParams(source=f"s3://{name}/videos", frame_folders=None, out_dir=str(tmp_path / "raw"),
                                 cache_dir=str(tmp_path / "cache"), s3_endpoint_url=s3_endpoint, progress=False))
    record = only_record(tmp_path / "raw" / "quarantine.jsonl")
    assert record["id"] == "gone" and record["source"] == f"s3://{name}/videos/gone.mp4"
    assert re.match(r"^fetch failed: s3://\S+/videos/gone\.mp4 vanished after it was listed \(NoSuchKey\)",
                    record["reason"]), record["reason"]
    assert {r["id"] for r in read_jsonl(tmp_path / "raw" / "manifest.jsonl")} == {"syn00001", "syn00002", "syn00003"}
    assert counts["seen"] == 4


# ---------------------------------------------------------------- extract_frames: accepted by ingest, not samplable


def xcase_single_frame(d: Path):
    encode_mp4(d / "videos" / "still.mp4", tiny_frames(1), 8.0, 96, 64)
    return "still", r"^ValueError: video has 1 frames, fewer than frame_factor=2$"


def xcase_extreme_aspect(d: Path):
    encode_mp4(d / "videos" / "banner.mp4", [np.zeros((8, 2000, 3), np.uint8)] * 8, 8.0, 2000, 8)
    return "banner", r"^ValueError: aspect ratio of 8x2000 exceeds 200$"


def xcase_file_gone_after_ingest(d: Path):
    shutil.copy(d / "videos" / "syn00001.mp4", d / "videos" / "moved.mp4")
    return "moved", r"^FileNotFoundError: listed in the manifest but missing: "


EXTRACT_CASES = [xcase_single_frame, xcase_extreme_aspect, xcase_file_gone_after_ingest]


@pytest.mark.parametrize("case", EXTRACT_CASES, ids=lambda c: c.__name__.removeprefix("xcase_"))
def test_extract_quarantines_bad_item_and_keeps_good_ones(good, tmp_path, case):
    src = tmp_path / "src"
    shutil.copytree(good / "syn" / "videos", src / "videos")
    bad_id, reason = case(src)
    ingest(IngestParams(source=str(src / "videos"), frame_folders=str(good / "syn" / "got10k"),
                        out_dir=str(tmp_path / "raw"), cache_dir=str(good / "cache"), progress=False))
    assert not read_jsonl(tmp_path / "raw" / "quarantine.jsonl")  # ingest accepted it
    if bad_id == "moved":
        (tmp_path / "raw" / "videos" / "moved.mp4").unlink()
    counts = extract_frames(ExtractFramesParams(raw_dir=str(tmp_path / "raw"), out_dir=str(tmp_path / "frames"),
                                                cache_dir=str(good / "cache"), progress=False, **TINY))
    record = only_record(tmp_path / "frames" / "quarantine.jsonl")
    assert record["id"] == bad_id and record["stage"] == "extract_frames"
    assert re.search(reason, record["reason"]), record["reason"]
    good_ids = {r["id"] for r in read_jsonl(good / "frames" / "index.jsonl")}
    assert {r["id"] for r in read_jsonl(tmp_path / "frames" / "index.jsonl")} == good_ids
    assert counts["seen"] == len(good_ids) + 1 and not (tmp_path / "frames" / f"{bad_id}.npy").exists()


# ---------------------------------------------------------------- build_samples: annotations

FILES = {"tg": "charades_sta.json", "gqa": "nextgqa.json", "tracking": "got10k.json", "qa": "mcq.json"}


def edit_json(d: Path, task: str, fn):
    path = d / FILES[task]
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def add_tg_interval(d: Path, interval, sentence: str) -> str:
    """Append one sentence with its interval (a function of the video's duration) to the first Charades-STA
    video; returns the new sample's id."""
    def add(data):
        vid = sorted(data)[0]
        data[vid]["timestamps"].append(interval(data[vid]["duration"]))
        data[vid]["sentences"].append(sentence)
    edit_json(d, "tg", add)
    data = json.loads((d / FILES["tg"]).read_text())
    vid = sorted(data)[0]
    return f"{vid}#{len(data[vid]['sentences']) - 1}"


def acase_interval_past_end_rejected(d: Path):
    sid = add_tg_interval(d, lambda duration: [1.0, duration + 5], "a person keeps going after the video ends")
    return sid, r"^interval \[1\.0, [\d.]+\] outside \[0, [\d.]+\]$", {"interval_policy": "reject"}


def acase_start_not_before_end(d: Path):
    return add_tg_interval(d, lambda _: [4.0, 2.5], "backwards"), r"^interval start 4\.0 >= end 2\.5$", {}


def acase_non_finite_number(d: Path):
    edit_json(d, "gqa", lambda data: data.append(dict(data[0], id="nan_glue", glue=[[float("nan"), 2.0]])))
    return "nan_glue", r"^evidence start is not finite: nan$", {}


def acase_answer_not_an_option(d: Path):
    edit_json(d, "gqa", lambda data: data.append(dict(data[0], id="answer_f", answer="(F)")))
    return "answer_f", r"^answer '\(F\)' is not among the option letters \['A', 'B', 'C', 'D', 'E'\]$", {}


def acase_item_not_an_object(d: Path):
    edit_json(d, "gqa", lambda data: data.append("a stray line of text"))
    return f"{d / FILES['gqa']}[{len(json.loads((d / FILES['gqa']).read_text())) - 1}]", \
        r"^item is not a JSON object$", {}


def acase_box_outside_unit_square(d: Path):
    def add(data):
        gt = [list(b) for b in data[0]["gt"]]
        gt[3] = [0.2, 0.2, 1.4, 0.6]
        data.append(dict(data[0], path="got10k/GOT-10k_Outside", gt=gt))
    edit_json(d, "tracking", add)
    return "GOT-10k_Outside", r"^box 3 \[0\.2, 0\.2, 1\.4, 0\.6\] has coordinates outside \[0, 1\]$", {}


def acase_box_inverted(d: Path):
    def add(data):
        gt = [list(b) for b in data[0]["gt"]]
        gt[0] = [0.6, 0.2, 0.4, 0.5]
        data.append(dict(data[0], path="got10k/GOT-10k_Inverted", gt=gt))
    edit_json(d, "tracking", add)
    return "GOT-10k_Inverted", r"^box 0 \[0\.6, 0\.2, 0\.4, 0\.5\] has x0 >= x1 or y0 >= y1$", {}


def acase_wrong_box_count(d: Path):
    edit_json(d, "tracking", lambda data: data.append(dict(data[0], path="got10k/GOT-10k_Seven", gt=data[0]["gt"][:7])))
    return "GOT-10k_Seven", r"^7 boxes, expected 8$", {}


def acase_frames_differ_from_boxes(d: Path):
    """A tracking annotation pointing at a video sampled under the budget (6 frames), not a frame folder (8)."""
    edit_json(d, "tracking", lambda data: data.append(dict(data[0], path="videos/syn00001")))
    return "syn00001", r"^[46] frames but 8 boxes$", {}


def acase_duplicate_id(d: Path):
    edit_json(d, "qa", lambda data: data.append(dict(data[1], id=data[0]["id"])))
    return json.loads((d / FILES["qa"]).read_text())[0]["id"], r"^duplicate id \(first at item 0\)$", {}


def acase_missing_video(d: Path):
    edit_json(d, "qa", lambda data: data.append(dict(data[0], id="no_video", video="never_ingested.mp4")))
    return "no_video", r"^video 'never_ingested' missing from the frame cache", {}


def acase_missing_field(d: Path):
    edit_json(d, "qa", lambda data: data.append({k: v for k, v in dict(data[0], id="no_q").items() if k != "question"}))
    return "no_q", r"^missing field 'question'$", {}


def acase_empty_text(d: Path):
    edit_json(d, "qa", lambda data: data.append(dict(data[0], id="blank_q", question="   ")))
    return "blank_q", r"^question is empty$", {}


def acase_lone_surrogate(d: Path):
    path = d / FILES["qa"]
    text = path.read_text()
    path.write_text(text.rstrip()[:-1] + ', {"id": "surrogate", "video": "syn00001.mp4", "question": "caf\\udce9?", '
                    '"options": ["(A) x", "(B) y"], "answer": "(A)"}]')
    return "surrogate", r"^question is not valid Unicode text \(surrogates not allowed\)$", {}


def acase_malformed_json_file(d: Path):
    path = d / FILES["gqa"]
    path.write_text(path.read_text()[:-20])
    return str(path), r"^annotation file unusable: .*nextgqa\.json: malformed JSON \(.* at line \d+\)$", {}


def acase_not_utf8_file(d: Path):
    path = d / FILES["qa"]
    data = json.loads(path.read_text())
    data[0]["question"] = "qu'est-ce que c'est, café?"
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode("latin-1"))
    return str(path), r"^annotation file unusable: .*mcq\.json: not UTF-8 text \(invalid continuation byte at byte \d+\)$", {}


def _native(d: Path, name: str) -> Path:
    """One more sequence next to the good ones in the native GOT-10k layout (the test switches tracking to it)."""
    seq = d / "got10k_native" / name
    shutil.copytree(d / "got10k_native" / "GOT-10k_Syn_000001", seq)
    return seq


def acase_native_line_count(d: Path):
    seq = _native(d, "GOT-10k_Lines")
    lines = (seq / "groundtruth.txt").read_text().splitlines()
    (seq / "groundtruth.txt").write_text("\n".join(lines[:-2]) + "\n")
    return "GOT-10k_Lines", r"^groundtruth.txt has 8 boxes for 10 frames$", {"native": True}


def acase_native_no_object_name(d: Path):
    seq = _native(d, "GOT-10k_Nameless")
    (seq / "meta_info.ini").unlink()
    return "GOT-10k_Nameless", r"^no object name \(meta_info.ini has no object_class\)$", {"native": True}


def acase_native_target_absent(d: Path):
    seq = _native(d, "GOT-10k_Absent")
    (seq / "absence.label").write_text("\n".join("1" if i == 4 else "0" for i in range(10)) + "\n")
    return "GOT-10k_Absent", r"^target absent at sampled frame 5 \(absence.label\)$", {"native": True}


def acase_negative_start(d: Path):
    """A start before 0 is a broken annotation: quarantined under the default policy (clip), not clipped."""
    sid = add_tg_interval(d, lambda _: [-0.5, 1.5], "a person starts before the video does")
    return sid, r"^interval start -0\.5 is negative \(before the video starts\)$", {}


def acase_prompt_too_long(d: Path):
    """A 1 MB question would be a 1 MB prompt."""
    edit_json(d, "qa", lambda data: data.append(dict(data[0], id="huge_q", question="why " * 262144)))
    return "huge_q", r"^prompt of 10\d{5} characters exceeds build_samples\.max_prompt_chars=8192$", {}


ANNOTATION_CASES = [acase_interval_past_end_rejected, acase_start_not_before_end, acase_non_finite_number,
                    acase_answer_not_an_option, acase_item_not_an_object, acase_box_outside_unit_square,
                    acase_box_inverted, acase_wrong_box_count, acase_frames_differ_from_boxes, acase_duplicate_id,
                    acase_missing_video, acase_missing_field, acase_empty_text, acase_lone_surrogate,
                    acase_malformed_json_file, acase_not_utf8_file, acase_native_line_count,
                    acase_native_no_object_name, acase_native_target_absent, acase_negative_start,
                    acase_prompt_too_long]


def build_params(ann: Path, out: Path, native: bool = False, **kw) -> BuildSamplesParams:
    files = {task: str(ann / name) for task, name in FILES.items()}
    if native:
        files["tracking"] = str(ann / "got10k_native")
    return BuildSamplesParams(annotations=files, out_dir=str(out), **kw)


@pytest.fixture(scope="module")
def good_samples(good, tmp_path_factory):
    """Sample ids built from the clean annotations, with the JSON and with the native tracking layout."""
    out = {}
    for native in (False, True):
        ann = tmp_path_factory.mktemp("ann")
        shutil.copytree(good / "syn" / "annotations", ann, dirs_exist_ok=True)
        if native:
            shutil.copytree(good / "syn" / "got10k", ann / "got10k_native")
        dest = tmp_path_factory.mktemp("samples")
        stats = build(build_params(ann, dest, native), str(good / "frames"))
        assert stats["quarantined"] == 0
        out[native] = rows_by_task(dest)
    assert out[False] == out[True]  # the native layout gives the same tracking samples as VideoChat-R1's JSON
    return out[False]


def rows_by_task(out: Path) -> dict[str, set[str]]:
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "eval.jsonl")
    by_task: dict[str, set[str]] = {}
    for r in rows:
        by_task.setdefault(r["task"], set()).add(r["id"])
    return by_task


@pytest.mark.parametrize("case", ANNOTATION_CASES, ids=lambda c: c.__name__.removeprefix("acase_"))
def test_build_quarantines_bad_annotation_and_keeps_good_ones(good, good_samples, tmp_path, case):
    ann = tmp_path / "ann"
    shutil.copytree(good / "syn" / "annotations", ann)
    shutil.copytree(good / "syn" / "got10k", ann / "got10k_native")
    bad_id, reason, opts = case(ann)
    native = opts.pop("native", False)
    stats = build(build_params(ann, tmp_path / "samples", native, **opts), str(good / "frames"))
    record = only_record(tmp_path / "samples" / "quarantine.jsonl")
    assert record["id"] == bad_id and record["stage"] == "build_samples" and record["source"]
    assert re.search(reason, record["reason"]), record["reason"]
    got = rows_by_task(tmp_path / "samples")
    unusable_file = record["reason"].startswith("annotation file unusable")
    for task, ids in good_samples.items():
        if unusable_file and record["id"].endswith(FILES[task]):
            assert task not in got  # a file that cannot be read contributes nothing ...
        else:
            assert got[task] == ids  # ... and every other good sample still comes through
    assert stats["quarantined"] == 1
