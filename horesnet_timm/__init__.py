"""HO-ResNet and LM-ResNet for timm. Importing this package registers the models with timm.

At once if timm is already imported; else as soon as timm is, and the importing thread is not half-way
through a module of this package (registering imports the model modules, which import from the others). So
`import horesnet_timm` costs no torch import of its own, and the `horesnet` command's help and its
torch-free runner (`horesnet predict`) start without torch. One race remains: while another thread is
half-way through importing a module of this package when timm is first imported, the models register when
that thread's import is done, not when `import timm` returns.
"""
import importlib.abc
import sys
import threading

from .schemes import Scheme, get_scheme, list_schemes

__version__ = '0.1.0'
__all__ = ['Scheme', 'get_scheme', 'list_schemes', 'HoResNet', 'restack', '__version__']


def _register() -> None:
    global HoResNet, restack
    from .models import HoResNet  # importing the model modules runs timm's @register_model
    from .restacking import restack


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Wraps the loaders of timm and of this package's modules to call `_register` once timm is imported and the
    importing thread is not half-way through a module of this package; then leaves sys.meta_path."""

    def __init__(self):
        self.thread = threading.local()  # .importing: modules of this package this thread is executing now
        self.timm_ready = False

    def find_spec(self, name, path=None, target=None):
        if name != 'timm' and not name.startswith(__name__ + '.'):
            return None
        finders = sys.meta_path[sys.meta_path.index(self) + 1:] if self in sys.meta_path else sys.meta_path
        spec = next((s for s in (f.find_spec(name, path, target) for f in finders if hasattr(f, 'find_spec'))
                     if s is not None), None)
        if spec is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        run, ours = spec.loader.exec_module, name != 'timm'

        def exec_module(module):
            self.thread.importing = getattr(self.thread, 'importing', 0) + ours
            try:
                run(module)
            finally:
                self.thread.importing -= ours
            self.timm_ready = self.timm_ready or not ours
            if self.timm_ready and not self.thread.importing:
                self.register()
        spec.loader.exec_module = exec_module
        return spec

    def register(self):
        if self not in sys.meta_path:
            return  # another thread has registered
        try:
            _register()
        except (RuntimeError, ImportError) as e:
            # another thread is half-way through a module the models import, waiting on timm, which this thread
            # is importing (a deadlock importlib detects, or a partially initialized module): that thread
            # registers when its import is done
            if type(e).__name__ != '_DeadlockError' and 'partially initialized' not in str(e):
                raise
            return
        try:
            sys.meta_path.remove(self)
        except ValueError:  # removed by another thread meanwhile
            pass


def __getattr__(name: str):
    if name in ('HoResNet', 'restack'):  # asked for before timm was imported: register now
        _register()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if 'timm' in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterWithTimm())
