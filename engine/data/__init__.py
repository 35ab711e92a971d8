"""Data: MNIST and Fashion-MNIST by name (found, downloaded, verified), IDX files, and the examples a run uses."""
from .datasets import DATASETS, Dataset, DatasetSpec, load, locate, searched_places
from .examples import Data, holdout_split, inputs, load_data
from .idx import DataError, read_idx

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "DataError", "Data", "holdout_split", "inputs", "load", "load_data",
           "locate", "read_idx", "searched_places"]
