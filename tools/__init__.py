"""The command-line fronts (`python tools/<name>.py`), installed as the package
`revvideo_tools` so that the console scripts (`revvideo-train`, ...) can call their `main`."""
