"""`resnet serve`: the HTTP API and the web app, on the user's own machine.

from resnet.serve import ServeSettings, create_app   # an ASGI app for uvicorn
from resnet.serve import Client                       # the API from Python
"""

from .app import create_app
from .client import Client
from .settings import ServeSettings

__all__ = ["Client", "ServeSettings", "create_app"]
