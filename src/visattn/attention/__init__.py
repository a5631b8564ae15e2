"""Attention modules, one paper per file, all registered by name.

>>> from visattn.attention import list_attention
>>> isinstance(list_attention(), list)
True
"""

from visattn.attention._registry import (
    check_drop_in,
    create_attention,
    create_sensor,
    get_attention_class,
    get_sensor_class,
    list_attention,
    list_sensors,
    register_attention,
    register_sensor,
)
from visattn.attention._tap import TAP_KINDS, AttentionTap

# Mechanism modules register themselves on import; keep one import line per paper below.
from visattn.attention.cbam import ConvBlockAttention
from visattn.attention.eca import EfficientChannelAttention
from visattn.attention.feedback import FilterGains
from visattn.attention.glimpse import GlimpseSensor
from visattn.attention.hourglass import Hourglass
from visattn.attention.multi_context import HolisticAttention
from visattn.attention.residual import ResidualAttentionModule
from visattn.attention.se import SqueezeExcite
from visattn.attention.spatial_transformer import SpatialTransformer

__all__ = [
    "ConvBlockAttention",
    "EfficientChannelAttention",
    "FilterGains",
    "GlimpseSensor",
    "HolisticAttention",
    "Hourglass",
    "ResidualAttentionModule",
    "SpatialTransformer",
    "SqueezeExcite",
    "AttentionTap",
    "TAP_KINDS",
    "check_drop_in",
    "create_attention",
    "create_sensor",
    "get_attention_class",
    "get_sensor_class",
    "list_attention",
    "list_sensors",
    "register_attention",
    "register_sensor",
]
