"""visattn: attention mechanisms for image classification, real and reproducible.

>>> import visattn
>>> "resnet20" in visattn.list_models()
True
"""

from visattn.attention import create_attention, list_attention, register_attention
from visattn.models import create_model, list_models, register_model
from visattn.retrofit import retrofit

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_attention",
    "create_model",
    "list_attention",
    "list_models",
    "register_attention",
    "register_model",
    "retrofit",
]
