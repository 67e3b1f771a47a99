"""Faithful local simulations of external artefacts (Hub repos, DICOM files) for tests and benchmarks."""
