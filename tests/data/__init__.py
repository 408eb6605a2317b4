"""Tests of revvideo.data; videos.py writes the small videos they use."""
