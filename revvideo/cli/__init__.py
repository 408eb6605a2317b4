"""The command-line programs: one module per command, its parser and `main`, which the console
scripts (`revvideo-train`, ...) and the checkout's `python tools/<name>.py` and
`python demo/classify.py` call. Nothing else in revvideo imports them."""
