"""tools/benchmark.py --section peak: the allocator trace replayed to its peak (the CUDA run is in
tests/cuda/test_cuda_tools.py)."""

from revvideo.benchmark.peak import live_at_peak


def _alloc(addr, size, filename="/site-packages/torch/functional.py", line=1):
    return dict(
        action="alloc", addr=addr, size=size, frames=[dict(filename=filename, line=line, name="f")]
    )


def test_the_blocks_alive_at_the_peak_are_summed_by_the_model_line_that_made_them():
    attention = "/repo/revvideo/models/common.py"
    trace = [
        _alloc(1, 100, attention, 10),
        _alloc(2, 40, attention, 10),
        _alloc(3, 30),  # framework only: no model frame
        dict(action="free_requested", addr=1, size=100),
        dict(action="free_completed", addr=1, size=100),  # one free, not two
        _alloc(4, 50, attention, 20),  # 120 alive, below the peak of 170
        dict(action="free_completed", addr=99, size=7),  # allocated before the trace began
    ]
    peak, by_site = live_at_peak(trace)

    assert peak == 170
    assert by_site == {
        "common.py:10 f": 140,
        "no model frame (built-in ops' backward, the loss, the optimizer)": 30,
    }


def test_an_empty_trace_has_no_peak():
    assert live_at_peak([]) == (0, {})
