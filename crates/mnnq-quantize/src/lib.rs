//! Turns a float model plus scales into MNN's int8 model form and writes it.
