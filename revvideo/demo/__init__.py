"""What `demo/classify.py` runs: the command line (cli.py, standard library only, so --help is
instant), then one run (run.py): load a classifier (classifier.py), score video files on the
test pipeline's multi-view clips and images on their centre crop (images.py), draw the results
(render.py)."""
