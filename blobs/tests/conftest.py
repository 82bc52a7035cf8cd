import os

from hypothesis import settings

# Hypothesis profiles: a smaller one in CI than locally (STYLE.md, Tests). Select with HYPOTHESIS_PROFILE.
settings.register_profile("ci", max_examples=25)
settings.register_profile("dev", max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
