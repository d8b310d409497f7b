"""sketchcolor: batch colorization of animation line art."""

__version__ = "0.1.0"
