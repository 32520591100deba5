"""A trained `model.pt` outside the workflow: features of one's own images, search, export.

- `extractor.FeatureExtractor`: images (paths, PIL images, uint8 arrays) -> (N, D) features,
  prepared as the workflow's evaluation prepares them (also `clusteralign.FeatureExtractor`);
- `images`: finding and decoding the images of a folder;
- `outputs`: feature files (.npy, .pt, .parquet);
- `search`, `search_page`: top-K gallery matches of queries, as CSV and as an HTML page;
- `export`: ONNX and TorchScript graphs of a model.

`docs/inference.md` describes the commands built on them (`clusteralign extract`, `search`,
`export`). This package imports nothing eagerly, so listing a folder stays cheap.
"""
