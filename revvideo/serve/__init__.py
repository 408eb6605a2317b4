"""revvideo-serve: a local HTTP service that classifies uploaded videos with the demo's classifier.

`GET /` is a page to drop or pick a video and see its top classes (and its timeline);
`POST /classify` takes the video as the body, or as the form field `video`, and answers the demo's
JSON entry (revvideo.demo.run.classify_entry); `GET /health` names the model.
"""

from revvideo.serve.app import Limits, build_app
from revvideo.serve.server import BackgroundServer, listening_socket, uvicorn_server

__all__ = ["BackgroundServer", "Limits", "build_app", "listening_socket", "uvicorn_server"]
