"""tensorgate for applications: the SDK and CLI users import and run (`import tensorgate`,
the `tensorgate` console script), and the image preparation the model services share with it."""

__version__ = "0.1.0"
