"""Image decoding into one uint8 tensor, resizing, and unreadable-file handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clusteralign.data.errors import CorruptImageError, DatasetError
from clusteralign.data.images import find_bad_images, load_images, verify_image
from fixtures import pixels, write_garbage, write_image, write_truncated_jpeg


def write_pngs(
    folder: Path, count: int, size: tuple[int, int] = (6, 5)
) -> tuple[list[Path], list[np.ndarray]]:
    paths = [folder / f"img_{i:03d}.png" for i in range(count)]
    return paths, [write_image(p, seed=i, size=size) for i, p in enumerate(paths)]


@pytest.mark.parametrize("num_workers", [0, 1, 3])
def test_load_exact_pixels_in_input_order(tmp_path: Path, num_workers: int) -> None:
    paths, expected = write_pngs(tmp_path, 11)
    order = [4, 0, 10, 2, 2, 7, 1, 3, 9, 5, 6, 8]  # shuffled, with a repeat
    out = load_images([str(paths[i]) for i in order], size=None, num_workers=num_workers)
    assert out.dtype == torch.uint8
    assert out.shape == (len(order), 3, 6, 5)
    for row, i in enumerate(order):
        # PNG is lossless, so decoded values must equal the written ones exactly, CHW.
        assert np.array_equal(out[row].permute(1, 2, 0).numpy(), expected[i])


def test_workers_are_processes_writing_into_one_buffer(tmp_path: Path, monkeypatch) -> None:
    import os

    from clusteralign.data import images

    paths, expected = write_pngs(tmp_path, 9)
    seen = tmp_path / "pids"
    seen.mkdir()
    decode = images._decode

    def decode_and_note_the_process(path, size):
        (seen / str(os.getpid())).touch()
        return decode(path, size)

    monkeypatch.setattr(images, "_decode", decode_and_note_the_process)
    out = load_images(paths, size=None, num_workers=2)
    assert {p.name for p in seen.iterdir()} - {str(os.getpid())}, "no image was decoded in a worker process"
    for row, rgb in enumerate(expected):
        assert np.array_equal(out[row].permute(1, 2, 0).numpy(), rgb)


def _decode_with_two_workers(paths: list[Path]) -> np.ndarray:
    return load_images(paths, size=None, num_workers=2).numpy().copy()


def test_a_pool_worker_which_may_not_fork_decodes_itself(tmp_path: Path) -> None:
    import multiprocessing

    paths, expected = write_pngs(tmp_path, 5)
    with multiprocessing.get_context("fork").Pool(1) as pool:  # its worker is a daemon
        out = pool.apply(_decode_with_two_workers, (paths,))
    for row, rgb in enumerate(expected):
        assert np.array_equal(out[row].transpose(1, 2, 0), rgb)


def test_resize_is_pil_bicubic(tmp_path: Path) -> None:
    paths, expected = write_pngs(tmp_path, 3, size=(10, 7))
    out = load_images(paths, size=(16, 8), num_workers=2)
    assert out.shape == (3, 3, 16, 8)
    for row, rgb in enumerate(expected):
        reference = np.asarray(Image.fromarray(rgb).resize((8, 16), Image.Resampling.BICUBIC))
        assert np.array_equal(out[row].permute(1, 2, 0).numpy(), reference)


def test_resize_mixed_sizes_and_keeps_exact_size(tmp_path: Path) -> None:
    small = write_image(tmp_path / "a.png", seed=1, size=(4, 4))
    exact = write_image(tmp_path / "b.png", seed=2, size=(8, 4))
    out = load_images([tmp_path / "a.png", tmp_path / "b.png"], size=(8, 4))
    assert out.shape == (2, 3, 8, 4)
    # An image already at the target size is not resampled.
    assert np.array_equal(out[1].permute(1, 2, 0).numpy(), exact)
    upscaled = np.asarray(Image.fromarray(small).resize((4, 8), Image.Resampling.BICUBIC))
    assert np.array_equal(out[0].permute(1, 2, 0).numpy(), upscaled)


def test_non_rgb_modes_become_rgb(tmp_path: Path) -> None:
    rgb = pixels(3, (5, 4))
    Image.fromarray(rgb[..., 0], mode="L").save(tmp_path / "gray.png")
    rgba = np.concatenate([rgb, np.full((5, 4, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    out = load_images([tmp_path / "gray.png", tmp_path / "alpha.png"], size=None)
    gray = out[0].permute(1, 2, 0).numpy()
    assert np.array_equal(gray, np.repeat(rgb[..., :1], 3, axis=2))
    assert np.array_equal(out[1].permute(1, 2, 0).numpy(), rgb)


def test_jpeg_decodes_close_to_source(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    flat = np.full((16, 8, 3), (200, 40, 90), np.uint8)
    Image.fromarray(flat).save(path, quality=95)
    out = load_images([path], size=None)
    assert np.abs(out[0].permute(1, 2, 0).numpy().astype(int) - flat).max() <= 3


@pytest.mark.parametrize("num_workers", [0, 2])
def test_different_sizes_without_target_size_name_the_file(tmp_path: Path, num_workers: int) -> None:
    same, _ = write_pngs(tmp_path, 4)
    write_image(tmp_path / "a.png", size=(6, 5))
    write_image(tmp_path / "b.png", size=(7, 5))
    with pytest.raises(DatasetError, match=r"b\.png.*7x5.*a\.png.*6x5.*size=\(H, W\)"):
        load_images([tmp_path / "a.png", *same, tmp_path / "b.png"], size=None, num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [1, 2])
@pytest.mark.parametrize("position", [0, 5])
def test_corrupt_image_raises_naming_it(tmp_path: Path, num_workers: int, position: int) -> None:
    paths, _ = write_pngs(tmp_path, 8)
    bad = tmp_path / "broken_0042.jpg"
    write_truncated_jpeg(bad)
    paths.insert(position, bad)
    with pytest.raises(CorruptImageError, match=r"broken_0042\.jpg.*truncated") as info:
        load_images(paths, size=(8, 4), num_workers=num_workers)
    assert isinstance(info.value, ValueError)


def test_missing_and_garbage_files_name_them(tmp_path: Path) -> None:
    paths, _ = write_pngs(tmp_path, 2)
    with pytest.raises(CorruptImageError, match=r"gone\.png.*does not exist"):
        load_images(paths + [tmp_path / "gone.png"], size=None)
    write_garbage(tmp_path / "junk.png")
    with pytest.raises(CorruptImageError, match=r"junk\.png.*not a recognised image"):
        load_images([tmp_path / "junk.png"] + paths, size=None)


def test_verify_image_reasons(tmp_path: Path) -> None:
    write_image(tmp_path / "ok.jpg")
    write_truncated_jpeg(tmp_path / "cut.jpg")
    write_garbage(tmp_path / "text.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert verify_image(tmp_path / "ok.jpg") is None
    assert "truncated" in verify_image(tmp_path / "cut.jpg")
    assert "not a recognised image" in verify_image(tmp_path / "text.png")
    assert "not a recognised image" in verify_image(tmp_path / "empty.jpg")
    assert verify_image(tmp_path / "missing.jpg") == "file does not exist"
    assert "folder" in verify_image(tmp_path)


def test_find_bad_images_in_order(tmp_path: Path) -> None:
    paths, _ = write_pngs(tmp_path, 5)
    write_truncated_jpeg(tmp_path / "z_cut.jpg")
    write_garbage(tmp_path / "a_text.png")
    found = find_bad_images(
        [paths[0], tmp_path / "z_cut.jpg", paths[1], tmp_path / "a_text.png"], num_workers=2
    )
    assert list(found) == [str(tmp_path / "z_cut.jpg"), str(tmp_path / "a_text.png")]


def test_empty_input_and_bad_arguments(tmp_path: Path) -> None:
    assert load_images([], size=(8, 4)).shape == (0, 3, 8, 4)
    assert load_images([], size=None).shape == (0, 3, 0, 0)
    write_image(tmp_path / "a.png")
    for size in [(0, 4), (8,), (8.5, 4), "8x4"]:
        with pytest.raises(ValueError, match="two positive integers"):
            load_images([tmp_path / "a.png"], size=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_workers"):
        load_images([tmp_path / "a.png"], size=None, num_workers=-1)
    with pytest.raises(ValueError, match="num_workers"):
        find_bad_images([tmp_path / "a.png"], num_workers=-1)
