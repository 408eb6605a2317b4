"""The annotated video is drawn on the picture as players show it."""

import av
import numpy as np

from revvideo.data.synthetic import write_video
from revvideo.demo.render import write_annotated_video


def test_a_rotated_video_is_annotated_upright(tmp_path):
    # Stored 64 wide and 48 high with a white bottom-right corner; shown turned a quarter
    # clockwise (display rotation -90), the corner is at the bottom left of a 48 x 64 portrait
    # picture (the labels are drawn at the top).
    frames = np.zeros((6, 48, 64, 3), dtype=np.uint8)
    frames[:, -12:, -12:] = 255
    source = tmp_path / "turned.mp4"
    write_video(str(source), frames, fps=6, rotation=-90)
    output = tmp_path / "annotated.mp4"

    written = write_annotated_video(str(source), output, lambda _: [("waving", 0.9)], until=10.0)

    assert written == 6
    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0, "the pixels are turned, not the display matrix"
        picture = frame.to_ndarray(format="rgb24").astype(float)
    assert picture.shape == (64, 48, 3)
    assert picture[-10:-2, 2:10].mean() > 200, "the white corner is at the bottom left"
    assert picture[-10:-2, -10:-2].mean() < 40, "the bottom right stays dark"
