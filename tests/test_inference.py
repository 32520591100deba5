"""A model file outside the workflow: FeatureExtractor, `clusteralign extract` and `search`."""

from __future__ import annotations

import csv
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clusteralign
from clusteralign.cli import main
from clusteralign.config import InferenceConfig
from clusteralign.eval.distance import compute_distance_matrix
from clusteralign.infer.commands import OutputError, _writing
from clusteralign.infer.extractor import FeatureExtractor
from clusteralign.infer.images import ImageInputError
from clusteralign.infer.outputs import file_list_path, read_features
from clusteralign.io import UnreadableFileError, torch_load
from clusteralign.models.file import InputSettings
from clusteralign.pipeline.steps import extract_feature_file
from fixtures import write_garbage
from model_files import tiny_experiment, write_model_file

@pytest.fixture(scope="module")
def model_path(tiny_dataset, tmp_path_factory):
    return write_model_file(tmp_path_factory.mktemp("model") / "model.pt", tiny_dataset[1], tiny_experiment())


def split_paths(manifest, split):
    return manifest.loc[manifest["split"] == split, "path"].tolist()


@pytest.mark.parametrize("cache", [{}, {"cache_height": 40, "cache_width": 20}], ids=["input_size", "cached_smaller"])
def test_features_equal_the_workflows(tiny_dataset, tmp_path, cache):
    # The same numbers as the workflow's extract_features step, also when images are decoded at
    # a cache size and resized on the tensor, and whatever the batch size.
    _, manifest = tiny_dataset
    exp = tiny_experiment(**cache)
    model = write_model_file(tmp_path / "model.pt", manifest, exp)
    extract_feature_file(model, manifest, InferenceConfig.of(exp.stage1), exp.features, tmp_path / "features.pt")
    workflow = torch_load(tmp_path / "features.pt")
    extractor = FeatureExtractor(model, "cpu", batch_size=5)
    assert (extractor.inputs.cache_height, extractor.inputs.cache_width) == (
        cache.get("cache_height", 64), cache.get("cache_width", 32))
    for split in ("query", "gallery"):
        features = extractor(workflow[split]["paths"])
        assert features.dtype == torch.float32 and features.shape == workflow[split]["features"].shape
        torch.testing.assert_close(features, workflow[split]["features"], rtol=1e-5, atol=1e-5)


def test_paths_pil_images_and_arrays_give_the_same_features(tiny_dataset, model_path):
    paths = split_paths(tiny_dataset[1], "query")[:4]
    extractor = FeatureExtractor(model_path, batch_size=3)
    from_paths = extractor(paths)
    pil = [Image.open(p) for p in paths]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    assert torch.equal(extractor(pil), from_paths)
    assert torch.equal(extractor(arrays), from_paths)
    assert torch.equal(extractor(np.stack(arrays)), from_paths)  # one N x H x W x 3 array
    assert torch.equal(extractor([paths[0], pil[1], arrays[2], Path(paths[3])]), from_paths)
    assert torch.equal(extractor(paths[2]), from_paths[2:3])
    # Any size: an enlarged copy is resized back as a file of that size would be.
    big = Image.open(paths[0]).resize((96, 192))
    big.save(Path(paths[0]).parent.parent / "big.png")
    assert torch.equal(extractor(big), extractor(Path(paths[0]).parent.parent / "big.png"))
    grey = np.asarray(Image.open(paths[0]).convert("L"))
    assert torch.equal(extractor(grey), extractor(Image.open(paths[0]).convert("L")))
    assert extractor([]).shape == (0, extractor.feature_dim)


def test_flip_follows_the_recorded_setting_unless_overridden(tiny_dataset, tmp_path, model_path):
    paths = split_paths(tiny_dataset[1], "query")[:3]
    unflipped = write_model_file(tmp_path / "noflip.pt", tiny_dataset[1], tiny_experiment(flip=False))
    assert FeatureExtractor(model_path).inputs.flip and not FeatureExtractor(unflipped).inputs.flip
    # Same weights, so the recorded setting alone makes the difference.
    assert torch.equal(FeatureExtractor(unflipped)(paths), FeatureExtractor(model_path, flip=False)(paths))
    assert not torch.allclose(FeatureExtractor(model_path)(paths), FeatureExtractor(unflipped)(paths))


def test_a_model_file_without_input_settings_needs_the_size(tiny_dataset, tmp_path, model_path):
    old = write_model_file(tmp_path / "old.pt", tiny_dataset[1], tiny_experiment(), record_inputs=False)
    with pytest.raises(UnreadableFileError,
                       match=r"old.pt: records no input size .*\(input_size=\(H, W\), or --input-size H W\)"):
        FeatureExtractor(old)
    paths = split_paths(tiny_dataset[1], "query")[:3]
    assert torch.equal(FeatureExtractor(old, input_size=(64, 32))(paths), FeatureExtractor(model_path)(paths))
    # Another size is decoded straight to it.
    assert FeatureExtractor(model_path, input_size=(32, 16)).inputs == InputSettings(
        32, 16, 32, 16, True, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")


def test_bad_inputs_are_named(tiny_dataset, tmp_path, model_path):
    extractor = FeatureExtractor(model_path)
    good = split_paths(tiny_dataset[1], "query")[0]
    write_garbage(tmp_path / "broken.jpg")
    with pytest.raises(ImageInputError, match=r"cannot read image .*broken.jpg: not a recognised image format"):
        extractor([good, tmp_path / "broken.jpg"])
    with pytest.raises(ImageInputError, match=r"image 1: expected a uint8 array of shape \(H, W, 3\)"):
        extractor([good, np.zeros((8, 4, 3), dtype=np.float32)])
    with pytest.raises(ImageInputError, match="image 0: expected a file path, a PIL image or a uint8 array, got int"):
        extractor([3])
    torch.save({"features": torch.zeros(2, 3)}, tmp_path / "features.pt")
    with pytest.raises(UnreadableFileError, match="features.pt: not a clusteralign model file"):
        FeatureExtractor(tmp_path / "features.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        FeatureExtractor(tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="device 'tpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        FeatureExtractor(model_path, "tpu")
    for size in [(0, 5), (64,), (64.0, 32), "64x32"]:
        with pytest.raises(ValueError, match=r"input_size .*: expected \(H, W\), two positive integers"):
            FeatureExtractor(model_path, input_size=size)


def test_the_package_exports_the_extractor_without_importing_torch_first():
    code = ("import sys, clusteralign\nassert 'torch' not in sys.modules\n"
            "from clusteralign import FeatureExtractor\nassert 'torch' in sys.modules\n"
            "print(FeatureExtractor.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "clusteralign.infer.extractor"
    assert clusteralign.FeatureExtractor is FeatureExtractor
    with pytest.raises(AttributeError):
        clusteralign.NoSuchThing  # noqa: B018


# --------------------------------------------------------------------------- clusteralign extract


@pytest.fixture(scope="module")
def image_folder(tiny_dataset):
    """The synthetic set's query folder."""
    return Path(split_paths(tiny_dataset[1], "query")[0]).parent


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".parquet"])
def test_extract_writes_features_and_file_names(image_folder, model_path, tmp_path, suffix, capsys):
    out = tmp_path / f"features{suffix}"
    assert main(["extract", "--model", str(model_path), "--images", str(image_folder), "--out", str(out),
                 "--batch-size", "4"]) == 0
    features, files = read_features(out)
    expected = sorted(p.name for p in image_folder.iterdir() if p.suffix == ".jpg")
    assert files == expected
    np.testing.assert_array_equal(features, FeatureExtractor(model_path)([image_folder / f for f in files]).numpy())
    assert f"{len(files)} features of dimension {features.shape[1]}" in capsys.readouterr().out
    if suffix == ".npy":
        assert file_list_path(out).name == "features.files.txt"
    if suffix == ".pt":
        assert torch_load(out)["input"]["height"] == 64


def test_extract_finds_images_in_sub_folders(tiny_dataset, model_path, tmp_path):
    paths = split_paths(tiny_dataset[1], "query")[:3]
    for i, p in enumerate(paths):
        (tmp_path / "in" / f"person{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.open(p).save(tmp_path / "in" / f"person{i % 2}" / Path(p).name)
    (tmp_path / "in" / ".hidden").mkdir()
    Image.open(paths[0]).save(tmp_path / "in" / ".hidden" / "x.jpg")
    assert main(["extract", "--model", str(model_path), "--images", str(tmp_path / "in"),
                 "--out", str(tmp_path / "f.pt")]) == 0
    features, files = read_features(tmp_path / "f.pt")
    assert files == sorted(f"person{i % 2}/{Path(p).name}" for i, p in enumerate(paths))
    np.testing.assert_array_equal(features, FeatureExtractor(model_path)([tmp_path / "in" / f for f in files]))


@pytest.mark.parametrize("case, message", [
    ("empty", "--images {tmp}/empty: holds no images; expected .jpg, .jpeg, .png files"),
    ("missing", "--images {tmp}/missing: does not exist"),
    ("broken", "cannot read image {tmp}/broken/b.jpg: not a recognised image format"),
    ("not_a_model", "{tmp}/model.pt: not a readable torch file"),
    ("suffix", "--out {tmp}/out.csv: unknown feature file format '.csv'; expected one of .npy, .pt, .parquet"),
    ("folder", "--out {tmp}/taken.npy: is a folder; expected a file path"),
    # Under a file: no folder can be made there, whoever runs the test (root included).
    ("unwritable", "--out {tmp}/a_file/out.npy: cannot be written ({tmp}/a_file is not a folder)"),
])
def test_extract_errors_are_one_line_naming_the_file(case, message, image_folder, model_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_garbage(tmp_path / "broken" / "b.jpg")
    (tmp_path / "model.pt").write_text("not a model")
    (tmp_path / "taken.npy").mkdir()
    (tmp_path / "a_file").write_text("")
    args = {"--model": model_path, "--images": image_folder, "--out": tmp_path / "out.npy"}
    args.update({"empty": {"--images": tmp_path / "empty"}, "missing": {"--images": tmp_path / "missing"},
                 "broken": {"--images": tmp_path / "broken"}, "not_a_model": {"--model": tmp_path / "model.pt"},
                 "suffix": {"--out": tmp_path / "out.csv"}, "folder": {"--out": tmp_path / "taken.npy"},
                 "unwritable": {"--out": tmp_path / "a_file/out.npy"}}[case])
    assert main(["extract", *(str(v) for kv in args.items() for v in kv)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clusteralign extract: error: ") and len(err.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "out.csv").exists()


# --------------------------------------------------------------------------- clusteralign search


def test_search_lists_the_nearest_gallery_images(tiny_dataset, model_path, tmp_path, capsys):
    manifest = tiny_dataset[1]
    query_dir = Path(split_paths(manifest, "query")[0]).parent
    gallery_dir = Path(split_paths(manifest, "gallery")[0]).parent
    assert main(["search", "--model", str(model_path), "--query", str(query_dir), "--gallery", str(gallery_dir),
                 "--top", "4", "--out", str(tmp_path / "out"), "--html-queries", "3"]) == 0
    assert "top 4" in capsys.readouterr().out
    queries = sorted(p for p in query_dir.iterdir() if p.suffix == ".jpg")
    gallery = sorted(p for p in gallery_dir.iterdir() if p.suffix == ".jpg")
    extractor = FeatureExtractor(model_path)
    dist = compute_distance_matrix(extractor(queries), extractor(gallery), normalize=True)
    with open(tmp_path / "out/matches.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * len(queries)
    for i, q in enumerate(queries):
        mine = [r for r in rows if r["query"] == q.name]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4]
        nearest = np.argsort(dist[i], kind="stable")[:4]
        assert [r["gallery"] for r in mine] == [gallery[j].name for j in nearest]
        np.testing.assert_allclose([float(r["distance"]) for r in mine], dist[i, nearest], atol=1e-5)
    page = (tmp_path / "out/matches.html").read_text()
    assert page.count('class="row"') == 3 and page.count("data:image/jpeg;base64,") == 3 * 5
    assert "The first 3 of" in page and queries[0].name in page


def test_a_folder_searched_against_itself_never_matches_an_image_with_itself(image_folder, model_path, tmp_path):
    assert main(["search", "--model", str(model_path), "--query", str(image_folder), "--gallery", str(image_folder),
                 "--top", "100", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "matches.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    count = len([p for p in image_folder.iterdir() if p.suffix == ".jpg"])
    assert len(rows) == count * (count - 1) and all(r["query"] != r["gallery"] for r in rows)


def test_search_refuses_a_file_as_its_folder(image_folder, model_path, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    assert main(["search", "--model", str(model_path), "--query", str(image_folder), "--gallery",
                 str(image_folder), "--out", str(tmp_path / "taken")]) == 1
    assert re.search(r"--out .*taken: is a file; expected a folder", capsys.readouterr().err)
    assert main(["search", "--model", str(model_path), "--query", str(image_folder), "--gallery",
                 str(image_folder), "--out", str(tmp_path / "taken/out")]) == 1
    err = capsys.readouterr().err
    assert err == (f"clusteralign search: error: --out {tmp_path}/taken/out: cannot be written "
                   f"({tmp_path}/taken is not a folder)\n")


def test_only_errors_of_the_output_folder_are_blamed_on_out(tmp_path):
    # The search page reads every shown image while it is written: an image that vanished
    # meanwhile keeps its own message, not "--out cannot be written".
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="gallery/a.jpg"):
        with _writing(out, into=out):
            open(tmp_path / "gallery/a.jpg")
    with pytest.raises(OutputError, match=r"--out .*out: cannot be written \(No space left on device\)"):
        with _writing(out, into=out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / ".matches.csv.x.tmp"))
