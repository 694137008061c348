"""Export trained models to verified, self-describing ONNX files: `exporter` (torch.onnx and the checks),
`metadata` (what the file says about itself), `verify` (ONNX Runtime against PyTorch).

Nothing is imported here: inference reads `metadata` without loading torch or the exporter.
"""
