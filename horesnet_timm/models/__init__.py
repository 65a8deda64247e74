from .horesnet import HoResNet, MultistepStage, Stage, create_horesnet
from . import cifar, imagenet, restacked  # registers the model families with timm
