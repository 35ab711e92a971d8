"""Data: MNIST and Fashion-MNIST by name (found, downloaded, verified), IDX files, your own data by path
(an .npz of arrays or a folder of class folders of images), and the examples a run uses."""
from .arrays import load_path, own_data
from .datasets import DATASETS, Dataset, DatasetSpec, load, locate, searched_places
from .examples import Data, holdout_split, inputs, load_data
from .idx import DataError, read_idx

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "DataError", "Data", "holdout_split", "inputs", "load", "load_data",
           "load_path", "locate", "own_data", "read_idx", "searched_places"]
