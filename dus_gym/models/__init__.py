"""Encoders by modality shape, heads and late fusion."""

from dus_gym.models.encoders import ENCODERS, ConvEncoder, GRUEncoder, MLPEncoder, make_encoder
from dus_gym.models.multimodal import MultimodalModel, build_model, init_parameters

__all__ = [
    "ENCODERS", "ConvEncoder", "GRUEncoder", "MLPEncoder", "MultimodalModel",
    "build_model", "init_parameters", "make_encoder",
]
