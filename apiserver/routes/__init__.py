"""The Execution API routes, one module per resource, each exposing ``routes(...)``."""
