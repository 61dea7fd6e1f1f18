"""Fixtures for the core tests: the bundled tiny model, loaded once per session."""

from __future__ import annotations

import pytest
from diffusers import ZImagePipeline

from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import BUNDLED_MODEL_DIR, ModelProfile, profile_for
from zerase.model.sampling import SamplingSettings
from zerase.world.probe import ConceptProbe


@pytest.fixture(scope="session")
def pipe() -> ZImagePipeline:
    return load_pipeline()


@pytest.fixture(scope="session")
def probe() -> ConceptProbe:
    return ConceptProbe.load(BUNDLED_MODEL_DIR / "probe")


@pytest.fixture(scope="session")
def settings() -> SamplingSettings:
    return profile_for().sampling


@pytest.fixture(scope="session")
def profile() -> ModelProfile:
    return profile_for()
