"""Serving a bundle on NVIDIA Triton Inference Server.

* :mod:`~lgfa_deploy.serve.protocol`: the served models (``animate``, ``clip``, ``stats``) declared
  once as data, and the checking of one request's inputs;
* :mod:`~lgfa_deploy.serve.batcher`: :class:`FrameBatcher`, which runs the frames of every live
  stream through one synthesis call at a time (the pipeline's own micro-batcher);
* :mod:`~lgfa_deploy.serve.server`: the models bound to Triton through PyTriton (``lgfa serve``);
* :mod:`~lgfa_deploy.serve.client`: frames from a server over gRPC (``lgfa client``);
* :mod:`~lgfa_deploy.serve.triton_repo`: a model repository for NVIDIA's Triton container,
  generated from the bundle's graph declarations (``lgfa triton-repo``).

Triton, PyTriton and tritonclient come with the ``serve`` extra and are imported only when used.
"""
