"""MongoDB read models: Beanie documents (the query side) and their projection (the write side)."""

from projections.read_models.documents import (
    DOCUMENTS,
    AccountView,
    CartView,
    CategoryView,
    OrderView,
    ProductView,
)
from projections.read_models.projection import Collections, ReadModelsProjection

__all__ = [
    "DOCUMENTS",
    "AccountView",
    "CartView",
    "CategoryView",
    "Collections",
    "OrderView",
    "ProductView",
    "ReadModelsProjection",
]
