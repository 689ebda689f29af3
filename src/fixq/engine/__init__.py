"""The int8 engine: :class:`Model` loads a quantized archive and runs it.  Static int8 models run as
one C plan (plan.py); the numpy steps (steps.py) are its test reference and run what the plan does
not: ``target=`` recipes that fixq's kernels lack, and float activations (dynamic mode, fp16)."""
from .model import Model, register_loader

__all__ = ["Model", "register_loader"]
