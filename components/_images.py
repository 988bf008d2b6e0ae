"""The one place that sets the container registry and tag of every component's base image.

Override at compile time with HLLM_IMAGE_REGISTRY / HLLM_IMAGE_TAG.
"""

import os

REGISTRY = os.environ.get("HLLM_IMAGE_REGISTRY", "ghcr.io/hllm-creator")
TAG = os.environ.get("HLLM_IMAGE_TAG", "0.1.0")

CPU_IMAGE = f"{REGISTRY}/hllm-creator-cpu:{TAG}"          # Dockerfiles/Dockerfile.cpu
GPU_IMAGE = f"{REGISTRY}/hllm-creator-gpu:{TAG}"          # Dockerfiles/Dockerfile.gpu
SERVING_IMAGE = f"{REGISTRY}/hllm-creator-serving:{TAG}"  # Dockerfiles/Dockerfile.serving
