"""rootstream's inference server (Flask + onnxruntime); it never imports torch.

The server itself arrives with the serving issue; this package exists so that the
distribution ships both import packages from the start.
"""

__all__: list[str] = []
