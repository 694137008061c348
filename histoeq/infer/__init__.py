"""Whole-slide inference with exported ONNX models (`predict`), its benchmark (`bench`) and the ORT predictor."""

from histoeq.infer.onnx_model import OnnxTileModel, load_onnx_predictor
from histoeq.infer.predict import PredictOptions, SlideResult, predict_slide, predict_slides

__all__ = ["OnnxTileModel", "PredictOptions", "SlideResult", "load_onnx_predictor", "predict_slide", "predict_slides"]
