"""The TabbyAPI dialect: TabbyAPI's own routes and the paths of its Go client.

One module per resource (models, embedding, templates, tokens, sampling, lora,
service); docs/http-api.md documents them.
"""

from __future__ import annotations

from .embedding import ROUTES as EMBEDDING_ROUTES
from .lora import ROUTES as LORA_ROUTES
from .models import ROUTES as MODEL_ROUTES
from .sampling import ROUTES as SAMPLING_ROUTES
from .service import ROUTES as SERVICE_ROUTES
from .templates import ROUTES as TEMPLATE_ROUTES
from .tokens import ROUTES as TOKEN_ROUTES

ROUTES = (
    *SERVICE_ROUTES,
    *MODEL_ROUTES,
    *EMBEDDING_ROUTES,
    *TEMPLATE_ROUTES,
    *TOKEN_ROUTES,
    *SAMPLING_ROUTES,
    *LORA_ROUTES,
)
