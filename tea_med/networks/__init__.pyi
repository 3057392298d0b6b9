# The names of tea_med.networks, for type checkers and for lazy_loader.attach_stub, which reads
# this file at import time to load each name from its submodule on first use. Add a name here
# only (as `from .module import Name as Name`).

from .batchnorm import FastBatchNorm1d as FastBatchNorm1d
from .batchnorm import FastBatchNorm2d as FastBatchNorm2d
from .batchnorm import FastBatchNorm3d as FastBatchNorm3d
from .checkpoints import load_weights as load_weights
from .classifiers import LRPResNetBlock as LRPResNetBlock
from .classifiers import LRPResNetBottleneck as LRPResNetBottleneck
from .classifiers import densenet121 as densenet121
from .classifiers import resnet18 as resnet18
from .classifiers import resnet34 as resnet34
from .classifiers import resnet50 as resnet50
from .concat import ChannelConcat as ChannelConcat
from .concat import FastDenseLayer as FastDenseLayer
from .double_backward import use_fast_double_backward as use_fast_double_backward
from .lrp_ready import lrp_ready as lrp_ready
from .lrp_ready import probe_input as probe_input
from .registry import NETWORKS as NETWORKS
from .registry import build_network as build_network
from .segmenter import SEGMENTER_PROFILES as SEGMENTER_PROFILES
from .segmenter import frozen_segmenter as frozen_segmenter
from .segmenter import lung_segmenter as lung_segmenter
from .student import STUDENT_INITS as STUDENT_INITS
from .student import init_student as init_student
from .student import last_linear as last_linear
from .teacher import TeacherPipeline as TeacherPipeline
from .teacher import explained_input as explained_input
from .teacher import load_teacher as load_teacher
from .teacher import teacher_classifier as teacher_classifier
