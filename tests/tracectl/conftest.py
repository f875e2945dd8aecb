"""Property tests here run under the shared Hypothesis profile (tests/hypothesis_profiles.py)."""

from tests.hypothesis_profiles import load_from_env

load_from_env()
