"""The configs revvideo ships (`configs/<dataset>/<MODEL>.yaml`), installed as the package
`revvideo_configs` so that `--cfg configs/kinetics/X.yaml` finds them from any folder
(revvideo.config.config_file)."""
