"""The synthetic face domain: cartoon faces with known parameters, rendered by numpy and OpenCV.

``parameters`` names the 16 renderer parameters (identity and expression, each on a 0-1 scale),
``render`` draws faces and their region masks, ``prompts`` maps the paper's 28 sentences to target
expressions, ``reader`` is the small CNN that reads the parameters back from a frame, and
``generator_regression`` / ``clip_renders`` train the domain's StyleGAN2 and CLIP.
"""
