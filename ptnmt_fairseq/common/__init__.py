"""Pieces shared by every method: compatibility layer, pretrained-model loading, data helpers."""
