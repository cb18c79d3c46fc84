"""Datasets read from the hub or local files in their real schemas: one module per `dataset=` option."""
