"""What `demo/classify.py` runs: load a classifier (classifier.py), score video files on the
test pipeline's multi-view clips, draw the results (render.py); the command line is cli.py."""
