"""``facerec serve``: a local page and JSON API to try a model on your own photos.

One job per module (the page lives beside the command line, layer 0: it imports inference and
nothing imports it):

- :mod:`.app`: :func:`create_app`, the FastAPI application (routes, error handlers, the page).
- :mod:`.service`: :class:`Service`, the model loaded once and the operations on decoded photos,
  serialised by one lock (no web framework in it).
- :mod:`.uploads`: untrusted uploads -> decoded images (size, type and pixel limits).
- :mod:`.schemas`: the typed responses (pydantic), which the OpenAPI page at ``/docs`` shows.
- ``static/``: the page itself (plain HTML, JS and CSS, no build step), a client of the API.

Needs the ``serve`` extra (``pip install facerec[serve]``: FastAPI, uvicorn, python-multipart).
"""
