"""The one place that sets the container registry and tag of every component's base image.

Override at compile time with HLLM_IMAGE_REGISTRY / HLLM_IMAGE_TAG. A release pins each image by
digest instead (immutable; what runs is what was scanned and tested): HLLM_IMAGE_DIGEST_CPU,
HLLM_IMAGE_DIGEST_GPU, HLLM_IMAGE_DIGEST_SERVING (``sha256:<64 hex>``) take precedence over the tag.
"""

import os
import re

REGISTRY = os.environ.get("HLLM_IMAGE_REGISTRY", "ghcr.io/hllm-creator")
TAG = os.environ.get("HLLM_IMAGE_TAG", "0.1.0")


def image(name: str) -> str:
    """``REGISTRY/hllm-creator-NAME@sha256:...`` when HLLM_IMAGE_DIGEST_NAME is set, else ``...:TAG``."""
    var = f"HLLM_IMAGE_DIGEST_{name.upper()}"
    digest = os.environ.get(var)
    if digest:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ValueError(f"{var}={digest!r} is not a digest (sha256:<64 hex>)")
        return f"{REGISTRY}/hllm-creator-{name}@{digest}"
    return f"{REGISTRY}/hllm-creator-{name}:{TAG}"


CPU_IMAGE = image("cpu")          # Dockerfiles/Dockerfile.cpu
GPU_IMAGE = image("gpu")          # Dockerfiles/Dockerfile.gpu
SERVING_IMAGE = image("serving")  # Dockerfiles/Dockerfile.serving
