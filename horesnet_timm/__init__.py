"""HO-ResNet and LM-ResNet for timm. Importing this package registers the models with timm."""
from .schemes import Scheme, get_scheme, list_schemes
from .models import HoResNet
from .restack import restack  # the function; the module is horesnet_timm.restack, the command commands.restack

__version__ = '0.1.0'
__all__ = ['Scheme', 'get_scheme', 'list_schemes', 'HoResNet', '__version__']
