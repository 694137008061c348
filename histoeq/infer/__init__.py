"""Whole-slide inference with exported ONNX models (`predict`), its benchmark (`bench`) and the ORT predictor."""

from histoeq.infer.onnx_model import OnnxTileModel
from histoeq.infer.predict import PredictOptions, SlideResult, predict_slide, predict_slides
from histoeq.infer.result import SlidePrediction

__all__ = ["OnnxTileModel", "PredictOptions", "SlidePrediction", "SlideResult", "predict_slide", "predict_slides"]
