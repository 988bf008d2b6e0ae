"""HLLM-Creator: personalized ad-title generation with hierarchical LLMs (arXiv 2508.18118).

The library knows nothing of KFP: components under ``components/`` are thin glue over it.
"""

__version__ = "0.1.0"
