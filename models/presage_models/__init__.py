"""presage's forecasting models: trace reading, features, training, ONNX export.

The feature definition here must stay identical to `forecast/src/features.rs`; the fixture test
(`forecast/tests/fixtures`) holds both to the same numbers.
"""
