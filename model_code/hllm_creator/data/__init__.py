"""Data contracts: dataset dirs, adapters, validation and the split."""

from hllm_creator.data.schema import DataError, Dataset, load_dataset  # noqa: F401
from hllm_creator.data.split import leave_last_out  # noqa: F401
