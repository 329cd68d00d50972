"""The canonical image store: decoding, content keys, cache hits, pickling, bad images."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from fabricate import image_bytes, item_color, item_image
from PIL import Image

from raygrid.data import image_store
from raygrid.data.image_store import ImageSource, StoredImages, decode_image, open_or_build
from raygrid.errors import DataError


def _sources(n: int, folder: Path | None = None) -> list[ImageSource]:
    if folder is None:
        return [ImageSource(label=f"item {i}", data=item_image(i)) for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{i}.img"
        path.write_bytes(item_image(i))
        out.append(ImageSource(label=f"{path.name} (item {i})", path=str(path)))
    return out


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("RGB", "PNG"), ("L", "PNG"), ("P", "PNG")])
def test_every_mode_decodes_to_rgb_of_the_requested_size(mode: str, fmt: str) -> None:
    color = (200, 40, 90)
    out = decode_image(image_bytes(color, fmt, size=(40, 30), mode=mode), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    if mode == "L":
        assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])
    else:
        assert np.abs(out[8, 2].astype(int) - color).max() < 12  # left half keeps its colour


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (10, 200, 10, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    assert np.all(decode_image(buffer.getvalue(), 8) == 255)


def test_draft_decoding_of_a_large_jpeg_matches_full_decoding() -> None:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, format="JPEG", quality=95)
    fast = decode_image(buffer.getvalue(), 32).astype(float)
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        full = np.asarray(im.convert("RGB").resize((32, 32), Image.Resampling.BOX), dtype=float)
    assert np.abs(fast - full).mean() < 3


def test_second_open_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _sources(12, tmp_path / "images")
    first = open_or_build(sources, 16, tmp_path / "store", workers=1)
    assert first.built and first.images.shape == (12, 16, 16, 3)

    def refuse(data: bytes, size: int) -> np.ndarray:
        raise AssertionError("decoded an image although the store exists")

    monkeypatch.setattr(image_store, "decode_image", refuse)
    second = open_or_build(sources, 16, tmp_path / "store", workers=1)
    assert not second.built and second.key == first.key
    np.testing.assert_array_equal(second.images, first.images)
    assert not second.images.flags.writeable


def test_key_follows_content_not_location(tmp_path: Path) -> None:
    in_files = open_or_build(_sources(6, tmp_path / "a"), 16, tmp_path / "store", workers=1)
    in_memory = open_or_build(_sources(6), 16, tmp_path / "store", workers=1)
    assert in_memory.key == in_files.key and not in_memory.built
    other_size = open_or_build(_sources(6), 24, tmp_path / "store", workers=1)
    assert other_size.key != in_files.key
    changed = _sources(6)
    changed[3] = ImageSource("item 3", data=image_bytes(item_color(99)))
    assert open_or_build(changed, 16, tmp_path / "store", workers=1).key != in_files.key


def test_stored_images_pickle_as_a_reference(tmp_path: Path) -> None:
    store = open_or_build(_sources(40), 32, tmp_path / "store", workers=1)
    blob = pickle.dumps(store.images, protocol=5)
    assert len(blob) < 1_000 < store.images.nbytes
    back = pickle.loads(blob)
    assert isinstance(back, StoredImages) and back.store_dir == store.images.store_dir
    np.testing.assert_array_equal(back, store.images)
    part = store.images[5:7]  # a derived array carries its data, not the reference
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(part)), part)


def test_parallel_decoding_equals_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _sources(20)
    serial = open_or_build(sources, 16, tmp_path / "serial", workers=1)
    monkeypatch.setattr(image_store, "_MIN_PARALLEL", 4)
    monkeypatch.setattr(image_store, "_CHUNK", 6)
    parallel = open_or_build(sources, 16, tmp_path / "parallel", workers=2)
    assert parallel.built
    np.testing.assert_array_equal(parallel.images, serial.images)


BAD = {
    "truncated": lambda: image_bytes((1, 2, 3), size=(64, 64))[:300],
    "not an image": lambda: b"this is a text file, not a picture\n" * 4,
    "empty": lambda: b"",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_image_fails_naming_it_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    sources = _sources(8)
    sources[5] = ImageSource("images/5.jpg (item '5')", data=BAD[kind]())
    with pytest.raises(DataError) as info:
        open_or_build(sources, 16, tmp_path / "store", workers=1)
    message = str(info.value)
    assert message.startswith("images/5.jpg (item '5'): ") and "\n" not in message
    assert {"truncated": "truncated", "not an image": "not an image", "empty": "empty"}[kind] in message
    assert all(p.is_dir() for p in _leftovers(tmp_path / "store"))  # only the empty shard folder


def test_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    sources = _sources(4, tmp_path / "images")
    Path(sources[2].path).unlink()
    with pytest.raises(DataError, match=r"^2\.img \(item 2\): image file is missing"):
        open_or_build(sources, 16, tmp_path / "store", workers=1)


def test_skip_bad_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sources = _sources(8)
    sources[1] = ImageSource("item 1", data=b"garbage")
    sources[6] = ImageSource("item 6", data=BAD["truncated"]())
    with caplog.at_level(logging.WARNING, logger="raygrid.data.image_store"):
        store = open_or_build(sources, 16, tmp_path / "store", skip_bad=True, workers=1)
    assert store.kept.tolist() == [0, 2, 3, 4, 5, 7]
    assert store.images.shape[0] == 6 and sorted(store.dropped) == [1, 6]
    assert "dropped 2 of 8 items" in caplog.text
    good = open_or_build(_sources(8), 16, tmp_path / "good", workers=1)
    np.testing.assert_array_equal(store.images, good.images[store.kept])
    # The store with drops is cached, but is still refused without skip_bad.
    with pytest.raises(DataError, match="item 1: not an image"):
        open_or_build(sources, 16, tmp_path / "store", workers=1)


def test_a_damaged_store_is_rebuilt(tmp_path: Path) -> None:
    sources = _sources(5)
    store = open_or_build(sources, 16, tmp_path / "store", workers=1)
    (store.directory / "images.npy").write_bytes(b"broken")
    again = open_or_build(sources, 16, tmp_path / "store", workers=1)
    assert again.built
    np.testing.assert_array_equal(again.images, open_or_build(sources, 16, tmp_path / "s2", workers=1).images)


def test_a_cache_hit_reads_no_image_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _sources(6, tmp_path / "images")
    first = open_or_build(sources, 16, tmp_path / "store", workers=1)

    def refuse(self: ImageSource) -> bytes:
        raise AssertionError("read an image file although the store index knows it")

    monkeypatch.setattr(ImageSource, "read", refuse)
    assert open_or_build(sources, 16, tmp_path / "store", workers=1).key == first.key


def test_an_edited_image_gives_a_new_store(tmp_path: Path) -> None:
    sources = _sources(6, tmp_path / "images")
    first = open_or_build(sources, 16, tmp_path / "store", workers=1)
    Path(sources[2].path).write_bytes(image_bytes(item_color(50), "PNG", size=(33, 20)))
    second = open_or_build(sources, 16, tmp_path / "store", workers=1)
    assert second.built and second.key != first.key
    np.testing.assert_array_equal(second.images[2], decode_image(Path(sources[2].path).read_bytes(), 16))
    np.testing.assert_array_equal(second.images[3], first.images[3])
