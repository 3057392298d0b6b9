# The names of tea_med.data, for type checkers and for lazy_loader.attach_stub, which reads
# this file at import time to load each name from its submodule on first use. Add a name here
# only (as `from .module import Name as Name`).

from .datasets import find_datalist as find_datalist
from .datasets import xray_dataset as xray_dataset
from .dicom import read_dicom as read_dicom
from .dicom_writer import write_dicom as write_dicom
from .errors import DataError as DataError
from .images import read_raster as read_raster
from .loading import LoadMask as LoadMask
from .loading import LoadXray as LoadXray
from .loading import LoadXrayd as LoadXrayd
from .manifest import ManifestError as ManifestError
from .manifest import Problem as Problem
from .manifest import load_datalist as load_datalist
from .manifest import manifest_schema as manifest_schema
from .manifest import quarantine as quarantine
from .manifest import read_manifest as read_manifest
from .manifest import validate_manifest as validate_manifest
from .manifest import write_quarantine_report as write_quarantine_report
from .masks import check_mask_shape as check_mask_shape
from .masks import read_mask as read_mask
from .phantom_files import save_example_grid as save_example_grid
from .phantom_files import write_phantoms as write_phantoms
from .phantoms import CLASSES as CLASSES
from .phantoms import HOSPITALS as HOSPITALS
from .phantoms import SPLITS as SPLITS
from .phantoms import Hospital as Hospital
from .phantoms import PhantomSpec as PhantomSpec
from .phantoms import generate_phantom as generate_phantom
from .phantoms import iter_phantoms as iter_phantoms
from .phantoms import plan_phantoms as plan_phantoms
from .phantoms import render_phantom as render_phantom
from .splitting import split_by_patient as split_by_patient
from .transforms import HistogramEqualize as HistogramEqualize
from .transforms import HistogramEqualized as HistogramEqualized
from .transforms import MaskBackgroundNoise as MaskBackgroundNoise
from .transforms import MaskBackgroundNoised as MaskBackgroundNoised
from .transforms import PadToSquare as PadToSquare
from .transforms import PadToSquared as PadToSquared
from .transforms import eval_transforms as eval_transforms
from .transforms import preprocess_transforms as preprocess_transforms
from .transforms import test_transforms as test_transforms
from .transforms import train_transforms as train_transforms
