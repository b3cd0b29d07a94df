"""The dashboard: server-rendered pages over the JSON API's own handlers (`routes/`, by page
group; what every page does is `page.py`)."""
