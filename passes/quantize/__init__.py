"""Weight quantization and the rewrite of linear layers into LUT ops."""
from .config import LayerQuant, QuantConfig
from .weight import QuantizedWeight, quantize_weight

__all__ = ["QuantConfig", "LayerQuant", "QuantizedWeight", "quantize_weight"]
