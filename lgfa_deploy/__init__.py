"""lgfa-deploy: language-guided face animation as real-time video.

The runtime needs no torch::

    import lgfa_deploy
    animator = lgfa_deploy.open("engines/tiny", backend="onnxruntime")
    frames = animator.animate("The person is smiling.", seed=0)   # uint8 BGR [T, H, W, 3]
    face = animator.invert("photo.jpg")                            # align, e4e, CLIP: once per photo
    frames = animator.animate("The person is smiling.", image=face)
"""
from lgfa_deploy.api import open
from lgfa_deploy.backends import open_backend
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.pipeline import Animator, InvertedFace, StreamFrame

__all__ = ["Animator", "InvertedFace", "LgfaError", "StreamFrame", "open", "open_backend"]
__version__ = "0.1.0"
