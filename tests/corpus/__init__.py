"""The corpus of models nobody on the team wrote (issue 12).

transformers architectures built from configs with random weights and exported the ways
users export them, a scikit-learn MLP through skl2onnx with its defaults, and the model
files that ship inside the silero-vad package. Nothing is downloaded at run time.

``builders`` makes the files and their datasets, ``checks`` holds what the test asserts
(shared with ``python -m tests.corpus.report``, which prints the figures per model).
"""
