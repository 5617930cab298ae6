"""The core group (``v1``): one module per kind."""
