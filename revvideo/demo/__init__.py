"""What `demo/classify.py` runs once it has parsed its options (run.py): load a classifier
(classifier.py), score video files on the test pipeline's multi-view clips and images on their
centre crop (images.py), draw the results (render.py)."""
