from .AlphaEdit_main import AlphaEditHyperParams, apply_AlphaEdit_to_model

__all__ = ["AlphaEditHyperParams", "apply_AlphaEdit_to_model"]
