"""Hypothesis profiles of the property tests over parsers of outside bytes.

- `ci` (the default): 200 examples per test, derandomized (the same inputs on every run and
  machine, so a red CI run reproduces locally), no deadline (a loaded CI machine is slow,
  not wrong), no example database written into the checkout. The whole set stays well
  under a minute.
- `long` (`make fuzz`, or `HYPOTHESIS_PROFILE=long`): 5,000 examples per test, new random
  inputs each run; a failure prints the `@reproduce_failure` blob to replay it.

The fuzz folders' conftest.py files call `load_from_env()`; it is here once so that they
all run under the same profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    # Strategies that build whole documents and frames are slow to generate by design.
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=200, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)


def load_from_env() -> None:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if name not in ("ci", "long"):
        raise ValueError(f"HYPOTHESIS_PROFILE={name!r}: use ci (the default) or long")
    settings.load_profile(name)
