"""Backbones and the papers' networks, all registered by name.

>>> from visattn.models import list_models
>>> "resnet20" in list_models()
True
"""

from visattn.models import mnist_cnn, resnet, resnet_cifar  # noqa: F401  (registers models)
from visattn.models._common import InputSpec
from visattn.models._load import load_model
from visattn.models._pretrained import list_pretrained
from visattn.models._registry import create_model, get_model_builder, list_models, register_model

# Papers' networks register themselves on import; keep one import line per file below.
from visattn.models.attention_net import ResidualAttentionNet  # noqa: F401  (registers attention*)
from visattn.models.dasnet import DasNet  # noqa: F401  (registers dasnet)
from visattn.models.dvan import DVAN  # noqa: F401  (registers dvan)
from visattn.models.efficientnet_lite import EfficientNetLite  # noqa: F401  (registers efficientnet_lite0)
from visattn.models.hourglass import StackedHourglass  # noqa: F401  (registers hourglass)
from visattn.models.multi_context import MCAPoseNet  # noqa: F401  (registers mca_hourglass)
from visattn.models.ram import RecurrentAttention  # noqa: F401  (registers ram)
from visattn.models.se_resnet import SEBasicBlock, SEBottleneck  # noqa: F401  (registers se_resnet*)
from visattn.models.stn import MultiSTNet, STClassifier  # noqa: F401  (registers fcn/cnn/st_*_mnist, st_cnn)

__all__ = [
    "InputSpec",
    "create_model",
    "get_model_builder",
    "list_models",
    "list_pretrained",
    "load_model",
    "register_model",
]
