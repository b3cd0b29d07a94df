"""The dashboard: server-rendered pages over the JSON API's own handlers (see `routes.py`)."""
