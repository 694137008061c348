"""Whole-slide reading (OpenSlide / tifffile / PIL behind one `Slide`) and tissue detection."""

from histoeq.slide.reader import Slide, open_slide

__all__ = ["Slide", "open_slide"]
