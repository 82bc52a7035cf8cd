"""The product's settings, with the GCP provider pointed at the test suite's gRPC fake (kms/tests/fakes.py):
``endpoint`` and ``insecure`` exist for emulators and have no environment variable of their own."""

import os

from erphub.settings import *  # noqa: F403
from erphub.settings import KMS_PROVIDERS

KMS_PROVIDERS["gcp"]["OPTIONS"].update(endpoint=os.environ["TEST_GCP_KMS_ENDPOINT"], insecure=True)
