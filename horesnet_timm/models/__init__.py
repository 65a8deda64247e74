from .horesnet import HoResNet, MultistepStage, Stage, create_horesnet
from . import cifar, imagenet  # registers the model families with timm
