"""The web app of ``prnet-app`` (a layer below :mod:`prnet.cli`, whose ``app.py`` is the command):
:mod:`prnet.app.service` the work per request, :mod:`prnet.app.page` the page."""
