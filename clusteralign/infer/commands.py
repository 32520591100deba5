"""The commands `clusteralign extract`, `search` and `export` (registered by `clusteralign.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..data.errors import DatasetError
from ..argtypes import non_negative_int, positive_int
from ..io import UnreadableFileError, write_failure

# What a command reports as one line instead of a traceback: bad input, named.
USER_ERRORS: tuple[type[BaseException], ...] = (DatasetError, UnreadableFileError, FileNotFoundError)


def _model_options(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--model", type=Path, required=True, help="a model.pt the workflow trained")
    p.add_argument("--input-size", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="resize images to H x W instead of the size the model was trained at "
                        "(needed for model files that do not record it)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each image's features with its mirror's (default: as the model's experiment did)")
    if device:
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        p.add_argument("--batch-size", type=positive_int, default=64)
        p.add_argument("--workers", type=non_negative_int, default=None,
                       help="processes that decode images (default: torch's thread count)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the three commands to `clusteralign`'s sub-command parsers."""
    p = sub.add_parser("extract", help="features of a folder of images from a trained model",
                       description="Write the test features of every image under --images (searched recursively) "
                                   "and their file names, in the format of --out's suffix.")
    _model_options(p)
    p.add_argument("--images", type=Path, required=True, help="a folder of .jpg/.jpeg/.png images")
    p.add_argument("--out", type=Path, required=True, help="FILE.npy (+ FILE.files.txt), FILE.pt or FILE.parquet")

    p = sub.add_parser("search", help="rank a gallery folder for each image of a query folder",
                       description="For each image under --query, its --top nearest images under --gallery: "
                                   "OUT/matches.csv (all queries) and OUT/matches.html (thumbnails).")
    _model_options(p)
    p.add_argument("--query", type=Path, required=True, help="a folder of query images")
    p.add_argument("--gallery", type=Path, required=True, help="a folder of gallery images")
    p.add_argument("--top", type=positive_int, default=10, help="matches listed per query")
    p.add_argument("--out", type=Path, required=True, help="a folder for matches.csv and matches.html")
    p.add_argument("--html-queries", type=non_negative_int, default=50, help="queries the HTML page shows (0: all)")

    p = sub.add_parser("export", help="a trained model as an ONNX or TorchScript graph",
                       description="The graph takes normalised float32 images (N x 3 x H x W, any N) and returns "
                                   "their features (N x D); docs/inference.md has the details.")
    _model_options(p, device=False)
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    p.add_argument("--out", type=Path, required=True, help="the graph file to write (e.g. model.onnx)")


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input is one line on stderr and exit status 1."""
    from .export import ExportError
    from .outputs import FeatureFileError

    try:
        return {"extract": _extract, "search": _search, "export": _export}[args.command](args)
    except (*USER_ERRORS, OutputError, ExportError, FeatureFileError) as err:
        print(f"clusteralign {args.command}: error: {err}", file=sys.stderr)
        return 1


class OutputError(Exception):
    """--out cannot be written: named, with the system's reason, instead of a temporary file's path."""


def _check_out_file(out: Path) -> None:
    # Before minutes of work, not after.
    if out.is_dir():
        raise OutputError(f"--out {out}: is a folder; expected a file path")


@contextmanager
def _writing(out: Path, into: Path) -> Iterator[None]:
    """An OSError of a write under `into` names --out; one about another file (an image the search
    page reads) passes unchanged."""
    try:
        yield
    except OSError as err:
        if err.filename is not None and not Path(os.path.abspath(err.filename)).is_relative_to(os.path.abspath(into)):
            raise
        raise OutputError(f"--out {out}: cannot be written ({write_failure(out, err)})") from None


def _extractor(args: argparse.Namespace):
    from .extractor import FeatureExtractor

    return FeatureExtractor(args.model, args.device, batch_size=args.batch_size, input_size=args.input_size,
                            flip=args.flip, num_workers=args.workers)


def _names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def _extract(args: argparse.Namespace) -> int:
    from .images import find_images
    from .outputs import check_suffix, write_features

    check_suffix(args.out)  # before minutes of extraction
    _check_out_file(args.out)
    paths = find_images(args.images, "--images")
    extractor = _extractor(args)
    features = extractor(paths, progress=True)
    meta = {"model": str(args.model), "input": extractor.inputs.to_meta()}
    with _writing(args.out, into=args.out.parent):
        written = write_features(args.out, features.numpy(), _names(paths, args.images), meta)
    print(f"{len(paths)} features of dimension {features.shape[1]} from {args.images}: "
          + ", ".join(map(str, written)))
    return 0


def _search(args: argparse.Namespace) -> int:
    from .images import find_images
    from .search import rank_gallery, same_files, write_matches_csv
    from .search_page import write_search_page

    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"--out {args.out}: is a file; expected a folder (made if absent)")
    queries, gallery = find_images(args.query, "--query"), find_images(args.gallery, "--gallery")
    extractor = _extractor(args)
    qf, gf = extractor(queries, progress=True).numpy(), extractor(gallery, progress=True).numpy()
    q_text, g_text = [str(p) for p in queries], [str(p) for p in gallery]
    matches = rank_gallery(qf, gf, args.top, same_file=same_files(q_text, g_text))
    q_names, g_names = _names(queries, args.query), _names(gallery, args.gallery)
    csv_path, html_path = args.out / "matches.csv", args.out / "matches.html"
    with _writing(args.out, into=args.out):
        write_matches_csv(csv_path, matches, q_names, g_names)
        shown = write_search_page(html_path, matches, q_text, q_names, g_text, g_names,
                                  f"{args.model}: top {matches.top} of {len(gallery)} gallery images",
                                  args.html_queries)
    print(f"{len(queries)} queries against {len(gallery)} gallery images, top {matches.top}: {csv_path}, "
          f"{html_path} ({shown} queries shown)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_model

    _check_out_file(args.out)
    inputs = export_model(args.model, args.format, args.out, input_size=args.input_size, flip=args.flip)
    print(f"{args.format} graph of {args.model} ({inputs.height} x {inputs.width} normalised float32 images, "
          f"flip {'on' if inputs.flip else 'off'}): {args.out}")
    return 0
