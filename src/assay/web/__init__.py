"""The ASGI application: the app factory, the JSON API and the review pages."""
