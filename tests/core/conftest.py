"""Fixtures for the core tests: the bundled tiny model, loaded once per session."""

from __future__ import annotations

import pytest
from diffusers import ZImagePipeline

from zerase.generate import SamplingSettings
from zerase.pipeline import BUNDLED_MODEL_DIR, load_pipeline, sampling_defaults
from zerase.world.probe import ConceptProbe


@pytest.fixture(scope="session")
def pipe() -> ZImagePipeline:
    return load_pipeline()


@pytest.fixture(scope="session")
def probe() -> ConceptProbe:
    return ConceptProbe.load(BUNDLED_MODEL_DIR / "probe")


@pytest.fixture(scope="session")
def settings() -> SamplingSettings:
    return sampling_defaults()
