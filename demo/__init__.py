"""The demo front (`python demo/classify.py`), installed as the package `revvideo_demo` so that
the console script `revvideo-classify` can call its `main`."""
